//! Refusing a connection with an answer, before reading its request.
//!
//! A server over its connection cap still accepts, answers (`503`, `429`) and closes,
//! rather than leave the client in the kernel's backlog, where it only sees its connect
//! time out. The answer is written before the client's request is read, so closing at
//! once would close a socket with unread input, and the kernel would send a reset that
//! can destroy the answer before the client reads it. So the socket lingers briefly,
//! reading and discarding, and closes after the client's request (or a bound).
//!
//! How many sockets may linger at once is each server's call (a flood must not turn
//! refusals into a pile of open sockets); this module only does the socket's part.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a refused socket lingers, reading and discarding, before it closes.
const LINGER: Duration = Duration::from_millis(500);
/// The most a refused socket reads before it closes: a request head and a small body.
const LINGER_BYTES: usize = 64 * 1024;

/// Writes `answer`, a complete HTTP/1.1 response that closes the connection, to a
/// socket nothing was read from yet.
///
/// Best effort and without waiting: a fresh socket's send buffer is empty, so the
/// answer fits; if not, the close says enough.
pub fn write_refusal(stream: &TcpStream, answer: &[u8]) {
    if let Err(e) = stream.try_write(answer) {
        tracing::trace!(error = %e, "could not write the refusal");
    }
}

/// After [`write_refusal`]: closes the sending side, then reads and discards what the
/// client sends, for at most half a second and 64 KiB, so the answer is not destroyed
/// by a reset (see the module docs). Dropping the socket instead closes it at once.
pub async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    if tokio::time::timeout(LINGER, drain).await.is_err() {
        tracing::trace!("a refused client kept its connection open; closing it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::connected;

    #[tokio::test]
    async fn a_refused_client_reads_the_whole_answer_after_sending_its_request() {
        let (stream, mut client) = connected().await;
        let answer = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\n";
        write_refusal(&stream, answer);
        let lingering = tokio::spawn(linger(stream));
        // The request arrives after the answer was written.
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, answer);
        drop(client);
        tokio::time::timeout(Duration::from_secs(2), lingering)
            .await
            .expect("the linger ends when the client closes")
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_keeps_its_connection_is_closed_after_the_linger() {
        let (stream, mut client) = connected().await;
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), linger(stream))
            .await
            .expect("bounded");
        assert!(started.elapsed() >= LINGER);
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        assert!(read.is_empty());
    }
}
