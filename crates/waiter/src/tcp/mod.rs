//! # The line protocol: a waiter you can talk to with `nc`
//!
//! Besides HTTP, a waiter can listen on a second port for a small text protocol: one
//! command per line, one reply per command. It exists to show the stateful/stateless
//! difference at the level where it is most tangible: a TCP *connection*.
//!
//! ```text
//! $ nc 127.0.0.1 7101
//! OK bistro waiter=w1 mode=stateful protocol=1; HELP lists the commands
//! NEW
//! session 3q2…Xw started
//! OK order kq0…Zb open; a draft on this connection until PLACE (lost if the connection drops)
//! ADD fries 2
//! OK added 2 x fries; order kq0…Zb open v2, 1 dish, total 9.00
//! PLACE
//! session 3q2…Xw
//! OK placed; ready in about 4s, STATUS shows progress; order kq0…Zb placed v3, 1 dish, total 9.00
//! ```
//!
//! In **stateful** mode the order being taken lives in the connection (see
//! [`conversation`]): fast, and gone if the connection drops before `PLACE`. In
//! **stateless** mode every command writes through to the central store, so a client
//! can reconnect to any waiter and `HELLO <session-id>` to carry on. Either way a placed
//! order is an ordinary order in the waiter's store, visible over HTTP with the same
//! session id. docs/protocol.md is the reference.
//!
//! ## How the code is laid out (after mini-redis)
//!
//! - [`codec`]: pure framing and tokenizing over bytes; fuzzed and property-tested.
//! - [`commands`]: one struct per command, one file each, with `parse` and `apply`.
//! - [`connection`]: the socket and its buffers, nothing protocol-specific.
//! - [`conversation`]: what a connection remembers (session, draft or stored order).
//! - [`reply`]: replies and refusals; error kinds shared with the HTTP API.
//! - `server`: the accept loop, the connection caps (in all and per address, see
//!   `per_ip`), the idle and write timeouts, and shutdown.
//!
//! The protocol shares everything else with HTTP: the store, the clock, the menu, the
//! kitchen timings, the domain rules (`Order::apply`) and the metrics
//! (`bistro_tcp_connections`, `bistro_tcp_commands_total{command,result}` on the HTTP
//! port's `/metrics`).

pub mod codec;
pub mod commands;
pub mod connection;
pub mod conversation;
mod per_ip;
pub mod reply;
mod server;

use crate::Waiter;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Limits of the TCP front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// A connection that sends no command for this long gets `BYE idle-timeout` and is
    /// closed (an abandoned `nc` must not hold a connection slot forever).
    pub idle_timeout: Duration,
    /// Longest one reply (or the greeting, or a `BYE`) may take to be handed to the
    /// client's socket. A client that sends commands but never reads its replies fills
    /// its receive window, then the waiter's send buffer, and the next reply waits;
    /// after this long the connection is closed without a word (nobody would read it),
    /// so such a client cannot hold a connection slot forever.
    pub write_timeout: Duration,
    /// Most connections served at once; one more is answered `ERR too-many-connections`
    /// and closed.
    pub max_connections: usize,
    /// Most connections served at once from one client address, so one client cannot
    /// take every slot of `max_connections`; one more is answered `ERR
    /// too-many-connections` and closed. Behind a TCP balancer every connection comes
    /// from the balancer's address: raise this to `max_connections` there.
    pub max_connections_per_ip: usize,
}

impl Default for TcpConfig {
    /// 5 minutes idle, 10 s to write a reply, 1024 connections, 64 per address.
    fn default() -> Self {
        TcpConfig {
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 64,
        }
    }
}

/// Serves the line protocol on `listener` with [`TcpConfig::default`] until `shutdown`
/// resolves; see [`run_tcp_with`].
///
/// # Errors
/// When the listener's address cannot be read.
pub async fn run_tcp(
    listener: TcpListener,
    waiter: Waiter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_tcp_with(listener, waiter, TcpConfig::default(), shutdown).await
}

/// Serves the line protocol on `listener` until `shutdown` resolves; then stops
/// accepting, lets every command in progress finish, sends each client `BYE
/// shutting-down ...`, closes the sockets and returns.
///
/// Only the protocol is served here: the kitchen and the session sweeper run with the
/// HTTP server ([`run`](crate::run)), so run both side by side on one [`Waiter`] (as
/// `bistro waiter --tcp-listen` does), or placed orders never cook.
///
/// # Errors
/// When the listener's address cannot be read.
pub async fn run_tcp_with(
    listener: TcpListener,
    waiter: Waiter,
    config: TcpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    let signal = tokio::spawn(async move {
        // Cancels however this task ends: a log line written to a closed stderr (a
        // parent that died) panics in the subscriber, and a token, unlike the sender of
        // a watch, is not cancelled by being dropped.
        let _cancel = cancel.drop_guard();
        shutdown.await;
        tracing::info!("tcp protocol shutting down: saying BYE to every connection");
    });
    tracing::info!(
        %addr,
        id = %waiter.config().id,
        max_connections = config.max_connections,
        max_connections_per_ip = config.max_connections_per_ip,
        idle_timeout_secs = config.idle_timeout.as_secs(),
        write_timeout_secs = config.write_timeout.as_secs_f64(),
        "tcp protocol serving"
    );
    server::serve(listener, waiter, config, stop).await;
    signal.abort();
    tracing::info!(%addr, "tcp protocol stopped");
    Ok(())
}
