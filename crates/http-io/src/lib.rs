//! # bistro-http-io: a client's socket under hyper
//!
//! Both of bistro's HTTP/1 servers, the waiter and the balancer, serve their clients
//! with hyper, and both need what hyper does not give: a request head timeout
//! (slowloris) apart from the keep-alive idle timeout, a send timeout (a client that
//! does not read), and answers written straight to the socket when there is no request
//! hyper could answer. This crate is that one piece, below hyper, for both.
//!
//! ## Why hyper's own timer is off
//!
//! hyper 1.x has one timer for the head and the idle wait: its header timer starts
//! whenever it begins waiting for a head, so it also runs while a keep-alive connection
//! waits for its next request, and the two cannot be given different lengths. It has
//! none for writes. So a server turns hyper's timer off (`header_read_timeout(None)`)
//! and wraps each socket in a [`ClientIo`], which knows from the connection's
//! [`Exchanges`] (requests started, responses ended) whether a request is being served,
//! and judges each stalled read by what the connection is doing:
//!
//! | the connection is | a read that waits is cut after | and then |
//! |---|---|---|
//! | new, nothing received | [`Timeouts::header`] from the accept | closed silently |
//! | between requests, nothing received | [`Timeouts::idle`] since the last response | closed silently |
//! | receiving a head | [`Timeouts::header`] from its first byte | answered `408 request-timeout`, closed |
//! | serving a request | never here (the server bounds the request: the waiter's `request_timeout`, the balancer's body timeouts) | — |
//! | draining (shutdown), nothing received | at once | closed silently |
//!
//! A write that waits, whatever the connection is doing, is cut after
//! [`Timeouts::send`] without progress, when the server sets one.
//!
//! "Closed silently" is an end of stream handed to hyper, which then closes the
//! connection as if the client had. The `408` is written straight to the socket: hyper
//! has no response to send for a head it never finished reading; each server renders
//! its own (its problem document, its headers) and hands the bytes in. Every cut but
//! the drain's is reported to the server as a [`TimedOut`] ([`Connection::timed_out`]),
//! so the balancer counts them in its metrics. One timer per connection serves all the
//! deadlines; it is re-armed only when the earliest one changes (see [`Alarm`]).
//!
//! ## When a response ends
//!
//! A connection is between requests once the response's last byte is written, which is
//! when hyper drops the response's body: so the server wraps each body in a
//! [`Tracked`] holding the request's [`InFlight`], and the exchange ends with it. (A
//! guard dropped with the handler's future would end too early, before the body.)
//!
//! One subtlety: hyper may poll the socket while a request is served (to notice a
//! client that left, or to read the request's body), and with its own timer off it
//! does not poll again when the response ends; it waits for the socket to become
//! readable. A read that was parked without a deadline during the request would then
//! never start the idle timer, and an idle connection would stay open for good. So the
//! end of a response wakes the parked read ([`InFlight`]'s drop), which then arms the
//! timer.
//!
//! ## Refusals
//!
//! A server that refuses a connection (too many of them) answers before reading the
//! request, with [`write_refusal`], and then lets the socket [`linger`]: closing a
//! socket with unread input makes the kernel send a reset, which can destroy the answer
//! before the client reads it.
//!
//! ## Wiring
//!
//! ```no_run
//! use bistro_http_io::{ClientIo, Exchanges, InFlight, Timeouts, Tracked};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # async fn accept(listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! let timeouts = Timeouts {
//!     header: Duration::from_secs(10),
//!     idle: Duration::from_secs(60),
//!     send: None,
//! };
//! let answer_408 = bytes::Bytes::from_static(b"HTTP/1.1 408 Request Timeout\r\n\r\n");
//! let (stream, _) = listener.accept().await?;
//! let exchanges = Arc::new(Exchanges::default());
//! let io = ClientIo::new(stream, exchanges.clone(), timeouts, answer_408);
//! // hand `io` to hyper (with its header timer off); in the service, for each request:
//! let in_flight = InFlight::start(&exchanges);
//! let body = Tracked::new(String::from("the response's body"), in_flight);
//! # drop((io, body));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod alarm;
mod client_io;
mod exchanges;
mod head;
mod refusal;

pub use alarm::Alarm;
pub use client_io::{ClientIo, TimedOut, Timeouts};
pub use exchanges::{Connection, Exchanges, InFlight, Tracked};
pub use head::head_size;
pub use refusal::{linger, write_refusal};

#[cfg(test)]
mod testing {
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair of sockets on 127.0.0.1: (the server's side, the client's).
    pub(crate) async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }
}
