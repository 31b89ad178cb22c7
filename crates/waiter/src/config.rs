//! What a waiter is told when it starts: its name, its mode and its limits.
//!
//! The mode is what bistro is about. A *stateful* waiter keeps the diners' notes on its
//! own notepad (a [`MemoryStore`](bistro_store::MemoryStore) in this process), so only
//! it can serve those diners and a restart loses them. A *stateless* waiter keeps them
//! in a central store, so any waiter can serve any request. The code paths are the same;
//! the mode changes what the waiter says when a session is missing (and is shown in
//! every response's `Bistro-Mode` header so users can watch stickiness at work).

use bistro_orders::{KitchenTimings, Menu};
use bistro_store::StoreUrl;
use std::sync::Arc;
use std::time::Duration;

pub use bistro_proto::{Mode, ParseModeError};

/// Everything a [`Waiter`](crate::Waiter) needs besides its store.
#[derive(Debug, Clone)]
pub struct WaiterConfig {
    /// The waiter's name, e.g. `w1`; sent in every response's `Bistro-Waiter` header.
    pub id: String,
    /// Stateful or stateless.
    pub mode: Mode,
    /// The dishes diners may order.
    pub menu: Arc<Menu>,
    /// How long the kitchen queues and cooks an order.
    pub kitchen: KitchenTimings,
    /// How often the kitchen looks for orders whose next step is due.
    pub kitchen_poll: Duration,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered 503 `timeout`.
    pub request_timeout: Duration,
    /// Longest one store operation may take before it counts as an outage.
    pub store_timeout: Duration,
    /// How often expired sessions are swept (and the cached counts refreshed).
    pub sweep_interval: Duration,
    /// Most sessions deleted per sweep round trip.
    pub sweep_batch: usize,
    /// Whether cookies always carry `Secure`. They also do whenever the proxy in front
    /// says the diner came over HTTPS (`X-Forwarded-Proto: https`).
    pub cookie_secure: bool,
    /// The store's URL, shown with its password redacted in `/v1/waiter`.
    pub store_url: StoreUrl,
    /// How often a write without `If-Match` re-reads and retries after losing a
    /// compare-and-set before answering 409 `conflict`.
    pub max_cas_retries: u32,
    /// Most sessions the store may hold. A stateful waiter's memory store enforces it
    /// exactly; on a central store the waiter checks the count its sweeper refreshes
    /// (every `sweep_interval`), so many waiters may overshoot it briefly. Beyond it,
    /// new diners get 503 `too-many-sessions` with `Retry-After`.
    pub max_sessions: usize,
    /// Most orders one session may hold; one more gets 409 `too-many-orders`.
    pub max_orders_per_session: usize,
    /// Most idempotency keys one session may hold at once (expired ones are pruned
    /// first); one more gets 409 `too-many-idempotency-keys`.
    pub max_idempotency_keys_per_session: usize,
    /// New sessions this waiter starts per second, on average; beyond it (and a burst
    /// of `session_burst`) new diners get 503 `too-many-new-sessions` with
    /// `Retry-After`. 0 disables the limit.
    pub session_rate_per_sec: u32,
    /// How many sessions may be started in a burst above the rate.
    pub session_burst: u32,
    /// Connection-level limits of the HTTP server: how long a client may take to send
    /// a request head, how long an idle keep-alive connection stays open, and how many
    /// connections are served at once.
    pub http: HttpLimits,
    /// Longest one exchange with another waiter may take when handing sessions to it
    /// (see [`handoff`](crate::handoff)); then the move fails and the sessions stay.
    pub handoff_timeout: Duration,
}

/// Limits that protect the HTTP server from clients that hold connections without
/// using them (slowloris, abandoned keep-alive connections, connection floods).
///
/// They act on connections, before and between requests; a request once received is
/// bounded by [`WaiterConfig::request_timeout`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest a client may take to send a complete request head, from the connection's
    /// accept (first request) or from the first byte of the head (later requests). A
    /// head that is started but not finished in time is answered `408`
    /// `request-timeout`; a new connection that sends nothing is closed silently.
    pub header_read_timeout: Duration,
    /// Longest a keep-alive connection may wait for its next request after a response;
    /// then it is closed silently. Kept apart from `header_read_timeout` (hyper has one
    /// timer for both), so idle connections can be given longer than slow heads.
    pub keep_alive_idle: Duration,
    /// Most connections served at once. One more is accepted, answered `503`
    /// `too-many-connections` with `Retry-After: 1` and closed, rather than left
    /// unanswered in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request head (request line and header fields, counted as they go on the
    /// wire): a larger one is answered `431` `request-header-too-large`. A head far
    /// over that, beyond what hyper buffers ([`read_buffer_bytes`](Self::read_buffer_bytes),
    /// which its reads may overshoot a little), is cut by hyper itself with a bare `431`.
    pub max_header_bytes: usize,
}

impl HttpLimits {
    /// The most hyper buffers of a request head before it gives up on it: room for
    /// the waiter's own check (see [`max_header_bytes`](Self::max_header_bytes)) to
    /// see an oversized head and answer it properly.
    pub fn read_buffer_bytes(&self) -> usize {
        self.max_header_bytes.saturating_mul(4).max(64 * 1024)
    }
}

impl Default for HttpLimits {
    /// 10 s for a request head, 60 s idle between requests, 10 000 connections,
    /// 16 KiB of head (nginx's and HAProxy's order of magnitude: 8–16 KiB).
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl Default for WaiterConfig {
    /// A stateful waiter `w1` on the default menu and a memory store.
    fn default() -> Self {
        WaiterConfig {
            id: "w1".to_string(),
            mode: Mode::Stateful,
            menu: Arc::new(Menu::default_menu()),
            kitchen: KitchenTimings::default(),
            kitchen_poll: Duration::from_millis(200),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            store_timeout: Duration::from_secs(2),
            sweep_interval: Duration::from_secs(10),
            sweep_batch: 1000,
            cookie_secure: false,
            store_url: StoreUrl::Memory,
            max_cas_retries: 16,
            max_sessions: 100_000,
            max_orders_per_session: 100,
            max_idempotency_keys_per_session: 1_000,
            session_rate_per_sec: 200,
            session_burst: 400,
            http: HttpLimits::default(),
            handoff_timeout: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_round_trips_through_display_from_str_and_serde() {
        for mode in [Mode::Stateful, Mode::Stateless] {
            assert_eq!(mode.to_string().parse::<Mode>().unwrap(), mode);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
        }
        assert_eq!(" Stateless ".parse::<Mode>().unwrap(), Mode::Stateless);
        let err = "sticky".parse::<Mode>().unwrap_err();
        assert!(err.to_string().contains("stateful"), "{err}");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = WaiterConfig::default();
        assert_eq!(c.mode, Mode::Stateful);
        assert_eq!(c.store_url, StoreUrl::Memory);
        assert_eq!(c.max_body_bytes, 65_536);
        assert_eq!(c.kitchen_poll, Duration::from_millis(200));
        assert_eq!(c.max_cas_retries, 16);
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.keep_alive_idle, Duration::from_secs(60));
        assert_eq!(c.http.max_connections, 10_000);
    }
}
