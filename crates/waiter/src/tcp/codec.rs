//! The wire format, without any I/O: finding lines in bytes and splitting them into words.
//!
//! Like mini-redis's `Frame::check`/`Frame::parse`, these functions work over a byte
//! cursor on whatever the connection has buffered so far, and never block or allocate
//! more than the line they return. [`check`] answers "is there a whole line yet?"
//! cheaply; [`line()`] hands it out and moves the cursor past its terminator. Because
//! they are pure, the unit tests, the property test and the fuzz target
//! (`fuzz/fuzz_targets/line_parser.rs`) exercise exactly the code the server runs.
//!
//! A line is at most [`MAX_LINE`] bytes, not counting its `\n` or `\r\n` terminator.
//! Longer input is refused as soon as [`MAX_LINE`] + 2 bytes have arrived without a
//! terminator, so a client cannot make the waiter buffer an unbounded line.
//!
//! [`Words`] is the tokenizer the command parsers share (mini-redis's `Parse`): words
//! are separated by spaces or tabs, and a command that takes free text (`REQUEST`) takes
//! the rest of the line as it was sent.

use std::io::Cursor;

/// Longest accepted line, in bytes, without its terminator.
pub const MAX_LINE: usize = 1024;

/// Why no line could be taken from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer holds no complete line yet: read more.
    #[error("the line is not complete yet")]
    Incomplete,
    /// The line is longer than [`MAX_LINE`] bytes; the connection cannot recover its
    /// framing and should be closed after saying so.
    #[error("the line is longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Checks whether a whole line starts at the cursor. On success the cursor is just past
/// the line's terminator; on error it has not moved.
///
/// # Errors
/// [`FrameError::Incomplete`] when more bytes are needed, [`FrameError::TooLong`] when
/// the line cannot fit in [`MAX_LINE`] bytes.
pub fn check(src: &mut Cursor<&[u8]>) -> Result<(), FrameError> {
    line(src).map(|_| ())
}

/// Takes the line starting at the cursor, without its `\n` or `\r\n`, and moves the
/// cursor past the terminator. On error the cursor has not moved.
///
/// # Errors
/// As [`check`].
pub fn line<'a>(src: &mut Cursor<&'a [u8]>) -> Result<&'a [u8], FrameError> {
    let buf: &'a [u8] = src.get_ref();
    let start = usize::try_from(src.position()).map_or(buf.len(), |p| p.min(buf.len()));
    let rest = &buf[start..];
    // A terminator may come at most MAX_LINE + 1 bytes in (after a '\r').
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return Err(if rest.len() >= MAX_LINE + 2 {
            FrameError::TooLong
        } else {
            FrameError::Incomplete
        });
    };
    let content = &rest[..newline];
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    if content.len() > MAX_LINE {
        return Err(FrameError::TooLong);
    }
    src.set_position((start + newline + 1) as u64);
    Ok(content)
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The line is not valid UTF-8.
    #[error("the line is not valid UTF-8; send plain UTF-8 text")]
    NotUtf8,
    /// The first word names no command.
    #[error("there is no command {0:?}; HELP lists the commands")]
    UnknownCommand(String),
    /// A required argument is missing.
    #[error("{command} needs {what}; usage: {usage}")]
    Missing {
        /// The command word, upper-case (`ADD`).
        command: &'static str,
        /// What is missing, as the message names it (`a dish id`).
        what: &'static str,
        /// The command's usage line (`ADD <dish> [qty]`), from
        /// [`USAGE`](crate::tcp::commands::USAGE), so the client learns the right form.
        usage: &'static str,
    },
    /// An argument is not of the expected form.
    #[error("{command}: {problem}; usage: {usage}")]
    Invalid {
        /// The command word, upper-case (`ADD`).
        command: &'static str,
        /// What is wrong with it, for people (`the quantity must be a whole number, got
        /// "two"`).
        problem: String,
        /// The command's usage line (`ADD <dish> [qty]`), from
        /// [`USAGE`](crate::tcp::commands::USAGE), so the client learns the right form.
        usage: &'static str,
    },
    /// More arguments than the command takes.
    #[error("{command} takes no argument {extra:?}; usage: {usage}")]
    Extra {
        /// The command word, upper-case (`ADD`).
        command: &'static str,
        /// The first word past the command's last argument.
        extra: String,
        /// The command's usage line (`ADD <dish> [qty]`), from
        /// [`USAGE`](crate::tcp::commands::USAGE), so the client learns the right form.
        usage: &'static str,
    },
}

impl ParseError {
    /// The stable error kind sent in `ERR <kind> ...`.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::NotUtf8 => "bad-encoding",
            ParseError::UnknownCommand(_) => "unknown-command",
            ParseError::Missing { .. } | ParseError::Invalid { .. } | ParseError::Extra { .. } => {
                "bad-argument"
            }
        }
    }
}

/// A line split into its command word and the words after it.
#[derive(Debug, Clone)]
pub struct Words<'a> {
    rest: &'a str,
    command: &'static str,
    usage: &'static str,
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits `line` into its command word (upper-cased) and the rest; `Ok(None)` for a
/// blank line, which is not a command and gets no reply.
///
/// # Errors
/// [`ParseError::NotUtf8`].
pub fn split(line: &[u8]) -> Result<Option<(String, &str)>, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let text = text.trim_matches(is_space);
    if text.is_empty() {
        return Ok(None);
    }
    let (verb, rest) = text.split_once(is_space).unwrap_or((text, ""));
    Ok(Some((
        verb.to_ascii_uppercase(),
        rest.trim_start_matches(is_space),
    )))
}

impl<'a> Words<'a> {
    /// The arguments `rest` of `command`, whose usage line is `usage` (for messages).
    pub fn new(rest: &'a str, command: &'static str, usage: &'static str) -> Words<'a> {
        Words {
            rest,
            command,
            usage,
        }
    }

    /// The next word, if any.
    pub fn next_word(&mut self) -> Option<&'a str> {
        let rest = self.rest.trim_start_matches(is_space);
        if rest.is_empty() {
            self.rest = rest;
            return None;
        }
        let (word, after) = rest.split_once(is_space).unwrap_or((rest, ""));
        self.rest = after;
        Some(word)
    }

    /// The next word, which must be there.
    ///
    /// # Errors
    /// [`ParseError::Missing`] naming `what`.
    pub fn word(&mut self, what: &'static str) -> Result<&'a str, ParseError> {
        self.next_word().ok_or(ParseError::Missing {
            command: self.command,
            what,
            usage: self.usage,
        })
    }

    /// Everything left on the line, as sent (inner spaces kept, outer ones trimmed).
    pub fn rest_of_line(&mut self) -> &'a str {
        let rest = self.rest.trim_matches(is_space);
        self.rest = "";
        rest
    }

    /// A number argument.
    ///
    /// # Errors
    /// [`ParseError::Invalid`] when `word` is not a whole number that fits in 32 bits.
    pub fn number(&self, word: &str, what: &str) -> Result<u32, ParseError> {
        word.parse::<u32>()
            .map_err(|_| self.invalid(format!("{what} must be a whole number, got {word:?}")))
    }

    /// An [`ParseError::Invalid`] for this command.
    pub fn invalid(&self, problem: String) -> ParseError {
        ParseError::Invalid {
            command: self.command,
            problem,
            usage: self.usage,
        }
    }

    /// Checks that nothing is left.
    ///
    /// # Errors
    /// [`ParseError::Extra`] naming the first extra word.
    pub fn finish(mut self) -> Result<(), ParseError> {
        match self.next_word() {
            None => Ok(()),
            Some(extra) => Err(ParseError::Extra {
                command: self.command,
                extra: extra.to_string(),
                usage: self.usage,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> (Vec<Vec<u8>>, Result<(), FrameError>, u64) {
        let mut cursor = Cursor::new(input);
        let mut out = Vec::new();
        loop {
            match line(&mut cursor) {
                Ok(l) => out.push(l.to_vec()),
                Err(e) => return (out, Err(e), cursor.position()),
            }
        }
    }

    #[test]
    fn splits_lf_and_crlf_lines_and_keeps_the_partial_one() {
        let (got, end, pos) = lines(b"MENU\r\nADD fries 2\nSHO");
        assert_eq!(got, vec![b"MENU".to_vec(), b"ADD fries 2".to_vec()]);
        assert_eq!(end, Err(FrameError::Incomplete));
        assert_eq!(pos, 18, "the cursor stops before the partial line");
    }

    #[test]
    fn a_lone_cr_is_content_not_a_terminator() {
        let (got, _, _) = lines(b"A\rB\n");
        assert_eq!(got, vec![b"A\rB".to_vec()]);
    }

    #[test]
    fn check_moves_the_cursor_only_on_success() {
        let mut c = Cursor::new(&b"PAY"[..]);
        assert_eq!(check(&mut c), Err(FrameError::Incomplete));
        assert_eq!(c.position(), 0);
        let mut c = Cursor::new(&b"PAY\n"[..]);
        assert_eq!(check(&mut c), Ok(()));
        assert_eq!(c.position(), 4);
    }

    #[test]
    fn the_limit_is_exact() {
        let mut ok = vec![b'a'; MAX_LINE];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(
            line(&mut Cursor::new(&ok[..])).map(<[u8]>::len),
            Ok(MAX_LINE)
        );
        let mut long = vec![b'a'; MAX_LINE + 1];
        long.push(b'\n');
        assert_eq!(line(&mut Cursor::new(&long[..])), Err(FrameError::TooLong));
        // No terminator in sight: refused once MAX_LINE + 2 bytes are buffered...
        let unterminated = vec![b'a'; MAX_LINE + 2];
        assert_eq!(
            line(&mut Cursor::new(&unterminated[..])),
            Err(FrameError::TooLong)
        );
        // ...and not before.
        let unterminated = vec![b'a'; MAX_LINE + 1];
        assert_eq!(
            line(&mut Cursor::new(&unterminated[..])),
            Err(FrameError::Incomplete)
        );
    }

    #[test]
    fn split_upper_cases_the_verb_and_ignores_blank_lines() {
        assert_eq!(
            split(b"  add\tfries  2 ").unwrap(),
            Some(("ADD".into(), "fries  2"))
        );
        assert_eq!(split(b"  \t ").unwrap(), None);
        assert_eq!(split(b"").unwrap(), None);
        assert_eq!(split(b"\xff\xfe"), Err(ParseError::NotUtf8));
    }

    #[test]
    fn words_and_rest_of_line() {
        let mut w = Words::new("fries  2", "ADD", "ADD <dish> [qty]");
        assert_eq!(w.word("a dish").unwrap(), "fries");
        assert_eq!(w.next_word(), Some("2"));
        assert_eq!(w.next_word(), None);
        let err = Words::new("", "ADD", "ADD <dish> [qty]")
            .word("a dish")
            .unwrap_err();
        assert_eq!(err.kind(), "bad-argument");
        assert!(err.to_string().contains("ADD needs a dish"), "{err}");
        let mut w = Words::new("  no  onions, please ", "REQUEST", "REQUEST <text>");
        assert_eq!(w.rest_of_line(), "no  onions, please");
        let extra = Words::new("x", "SHOW", "SHOW").finish().unwrap_err();
        assert!(matches!(extra, ParseError::Extra { .. }));
    }

    #[test]
    fn numbers_must_fit() {
        let w = Words::new("", "SPICE", "SPICE <0-5>");
        assert_eq!(w.number("5", "the level"), Ok(5));
        assert!(w.number("-1", "the level").is_err());
        assert!(w.number("99999999999", "the level").is_err());
    }
}
