//! [`Connection`]: one socket and its buffers, speaking in lines and replies.
//!
//! As in mini-redis, the connection owns a read buffer that the pure codec looks into,
//! and a buffered writer so a reply of many lines leaves in one write. Everything
//! protocol-level (what a line means, what to answer) happens elsewhere; this type only
//! knows how lines are framed and how to close a socket politely.
//!
//! [`Connection::read_line`] is cancel-safe: bytes already read stay in the buffer, so
//! the server can race it against an idle timer or the shutdown signal and lose nothing.
//!
//! Every write is bounded by the connection's *write timeout*: a client that sends
//! commands but never reads its replies would otherwise block the server in a write
//! forever, holding a connection slot. A write that times out leaves the connection
//! *stalled*: the rest of that reply is unsent, so nothing more is written and closing
//! just drops the socket.
//!
//! Closing is a *lingering* close ([`Connection::close`]): flush, half-close the write
//! side (the client reads EOF after our last line), then read and discard what the
//! client still sends for a moment. Dropping a socket with unread input makes the
//! kernel answer with a reset, and a reset can overtake our last line (the `ERR
//! line-too-long` a client most needs to see).

use crate::tcp::codec::{self, FrameError};
use crate::tcp::reply::{Reply, push_line};
use bytes::{Buf, BytesMut};
use std::io::{self, Cursor};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

/// Initial read buffer: a few lines.
const READ_BUFFER: usize = 4 * 1024;
/// How long a close waits for the client to stop sending.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// What reading produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// One line, without its terminator.
    Line(BytesMut),
    /// A line longer than [`codec::MAX_LINE`]; the framing is lost.
    TooLong,
    /// The client closed the connection (an unterminated last line is dropped).
    Closed,
}

/// A client connection: the socket, a read buffer and a write buffer.
#[derive(Debug)]
pub struct Connection<S> {
    stream: BufWriter<S>,
    buffer: BytesMut,
    write_timeout: Duration,
    /// A write timed out: part of a reply may be unsent, so nothing more is written.
    stalled: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps `stream`; each reply must be written within `write_timeout`.
    pub fn new(stream: S, write_timeout: Duration) -> Connection<S> {
        Connection {
            stream: BufWriter::new(stream),
            buffer: BytesMut::with_capacity(READ_BUFFER),
            write_timeout,
            stalled: false,
        }
    }

    /// Reads until a whole line is buffered and returns it.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn read_line(&mut self) -> io::Result<Incoming> {
        loop {
            let mut cursor = Cursor::new(&self.buffer[..]);
            match codec::line(&mut cursor) {
                Ok(line) => {
                    let (len, consumed) = (line.len(), cursor.position() as usize);
                    let line = self.buffer.split_to(len);
                    self.buffer.advance(consumed - len);
                    return Ok(Incoming::Line(line));
                }
                Err(FrameError::TooLong) => return Ok(Incoming::TooLong),
                Err(FrameError::Incomplete) => {}
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Ok(Incoming::Closed);
            }
        }
    }

    /// Sends a reply.
    ///
    /// # Errors
    /// The socket's error; [`io::ErrorKind::TimedOut`] when the reply could not be
    /// written within the write timeout (the connection is then stalled, see the
    /// module docs).
    pub async fn write_reply(&mut self, reply: &Reply) -> io::Result<()> {
        let mut out = Vec::with_capacity(256);
        reply.encode(&mut out);
        self.send(&out).await
    }

    /// Sends one line (a greeting or a `BYE`).
    ///
    /// # Errors
    /// As [`Connection::write_reply`].
    pub async fn write_line(&mut self, line: &str) -> io::Result<()> {
        let mut out = Vec::with_capacity(line.len() + 2);
        push_line(&mut out, line);
        self.send(&out).await
    }

    /// Writes and flushes `bytes` within the write timeout.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.stalled {
            return Err(stalled(self.write_timeout));
        }
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(written) => written,
            Err(_elapsed) => {
                self.stalled = true;
                Err(stalled(self.write_timeout))
            }
        }
    }

    /// Flushes, half-closes, and lingers briefly so the last line is not lost to a
    /// reset (see the module docs). A stalled connection is just dropped: its client
    /// reads nothing, so there is nothing to protect.
    ///
    /// # Errors
    /// The socket's error while flushing or half-closing; [`io::ErrorKind::TimedOut`]
    /// when flushing takes longer than the write timeout.
    pub async fn close(mut self) -> io::Result<()> {
        if self.stalled {
            return Ok(());
        }
        match tokio::time::timeout(self.write_timeout, self.stream.shutdown()).await {
            Ok(shut) => shut?,
            Err(_elapsed) => return Err(stalled(self.write_timeout)),
        }
        let drain = async {
            let mut discarded = 0;
            let mut scratch = [0u8; 4096];
            while discarded < LINGER_BYTES {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => discarded += n,
                }
            }
        };
        // Elapsing is the expected end for a client that keeps the socket open.
        if tokio::time::timeout(LINGER, drain).await.is_err() {
            tracing::trace!("tcp client still connected after the linger; closing");
        }
        Ok(())
    }
}

/// The error of a write that did not finish within `limit`.
fn stalled(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the client read no reply for {} ms (the write timeout)",
            limit.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::codec::MAX_LINE;
    use crate::tcp::reply::Refusal;

    const WRITE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn reads_lines_split_across_writes_and_pipelined_in_one() {
        let (client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server, WRITE);
        let mut client = client;
        client.write_all(b"ME").await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(conn.read_line().await.unwrap());
            }
            got
        });
        client.write_all(b"NU\r\nSHOW\nPAY\n").await.unwrap();
        let got = reader.await.unwrap();
        let text: Vec<Incoming> = ["MENU", "SHOW", "PAY"]
            .iter()
            .map(|s| Incoming::Line(BytesMut::from(s.as_bytes())))
            .collect();
        assert_eq!(got, text);
    }

    #[tokio::test]
    async fn too_long_and_closed() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut conn = Connection::new(server, WRITE);
        client.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
        assert_eq!(conn.read_line().await.unwrap(), Incoming::TooLong);
        let (mut client, server) = tokio::io::duplex(4096);
        let mut conn = Connection::new(server, WRITE);
        client.write_all(b"HALF").await.unwrap();
        drop(client);
        assert_eq!(conn.read_line().await.unwrap(), Incoming::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn replies_and_close() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut conn = Connection::new(server, WRITE);
        conn.write_line("OK bistro").await.unwrap();
        conn.write_reply(&Reply::err(Refusal::new("no-order", "none")))
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "OK bistro\r\nERR no-order none\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_times_the_write_out_and_the_close_is_immediate() {
        // A pipe that holds 64 bytes, whose reader never reads.
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server, Duration::from_millis(300));
        let start = tokio::time::Instant::now();
        let err = conn.write_line(&"x".repeat(1000)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        let err = conn.write_line("BYE").await.unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::TimedOut,
            "a stalled connection stays so"
        );
        conn.close().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(300),
            "no flush, no linger"
        );
    }
}
