//! # bistro-waiter: the order service
//!
//! A *waiter* takes diners' orders over HTTP. It runs in one of three modes, and the
//! difference is the point of bistro:
//!
//! - **stateful**: the diners' notes (sessions and orders) live in this process's memory.
//!   Only this waiter can serve a session, so a balancer must be sticky; a restart loses
//!   every open order, and the waiter says so (404 `unknown-session`) rather than
//!   pretending the diner never ordered.
//! - **stateless**: the notes live in a central store (SQLite, PostgreSQL, Redis) and any
//!   waiter can serve any request. Each request costs a store round trip; the metrics
//!   count them.
//! - **replicated**: in this process's memory, and copied to a peer waiter before a
//!   change is acknowledged ([`replication`]): reads cost what stateful reads cost, and a
//!   waiter's death loses nothing.
//!
//! Both modes run the same code over the [`OrderStore`](bistro_store::OrderStore) trait.
//! A request reads the session from a cookie, reads or compare-and-sets the order in one
//! store call, and answers JSON (errors as RFC 9457 problem documents). Writes are never
//! last-writer-wins: `If-Match` pins a version (412 otherwise), and without it the waiter
//! re-applies the change on a lost compare-and-set. `Idempotency-Key` makes a POST safe
//! to retry. A background kitchen moves placed orders through cooking to ready, and a
//! sweeper deletes expired sessions.
//!
//! ```no_run
//! use bistro_store::{MemoryStore, StoreConfig};
//! use bistro_waiter::{Waiter, WaiterConfig, run};
//! use std::sync::Arc;
//! # async fn demo() -> std::io::Result<()> {
//! let store = Arc::new(MemoryStore::new(StoreConfig::default()));
//! let waiter = Waiter::new(WaiterConfig::default(), store);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = async {
//!     if let Err(e) = tokio::signal::ctrl_c().await {
//!         eprintln!("cannot listen for ctrl-c ({e}); stopping");
//!     }
//! };
//! run(listener, waiter, shutdown).await
//! # }
//! ```
//!
//! The HTTP API is described by `GET /openapi.json`, generated from the handlers. The
//! [`tcp`] module adds a line protocol on a second port (`nc`-friendly), served by
//! [`run_tcp`] next to [`run`] on the same [`Waiter`].

#![warn(missing_docs)]

mod body;
mod clock;
mod config;
mod handlers;
pub mod handoff;
mod idempotency;
mod kitchen;
mod metrics;
mod middleware;
mod openapi;
mod precondition;
mod problem;
pub mod replication;
mod reply;
mod server;
pub mod service;
mod session;
mod sweeper;
pub mod tcp;
mod view;
mod waiter;

pub use clock::Clock;
pub use config::{HttpLimits, Mode, ParseModeError, WaiterConfig};
pub use server::run;
pub use tcp::{TcpConfig, run_tcp, run_tcp_with};
pub use waiter::Waiter;

#[cfg(test)]
mod tests;
