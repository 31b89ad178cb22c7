//! Feeds arbitrary bytes to the line protocol's framing and command parser, the same
//! pure code the waiter runs on every byte a client sends. Properties checked besides
//! "never panics": every line handed out fits the limit, the cursor only moves forward,
//! and a parse error always has a kind (the word after `ERR`).

#![no_main]

use bistro_waiter::tcp::codec::{self, FrameError, MAX_LINE};
use bistro_waiter::tcp::commands::Command;
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    loop {
        let before = cursor.position();
        match codec::line(&mut cursor) {
            Ok(line) => {
                assert!(line.len() <= MAX_LINE);
                assert!(cursor.position() > before);
                match Command::parse(line) {
                    Ok(Some(command)) => assert!(!command.name().is_empty()),
                    Ok(None) => {}
                    Err(e) => assert!(!e.kind().is_empty() && !e.to_string().is_empty()),
                }
            }
            Err(FrameError::Incomplete) | Err(FrameError::TooLong) => {
                assert_eq!(cursor.position(), before);
                break;
            }
        }
    }
});
