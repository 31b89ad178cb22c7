//! The balancer's side of its client sockets' timeouts, which [`bistro_http_io`] keeps
//! (see its docs for when each applies and why hyper's own timer is off): the lengths,
//! from the configuration; the raw `408` written when a head times out; and where a
//! timeout is reported, the worker's `bistro_balancer_timeouts_total` counters.
//!
//! | timeout | configured by | counted as `kind` |
//! |---|---|---|
//! | a new connection sends nothing | `header_read_timeout_ms`, from the accept | `header` |
//! | a head is not finished | `header_read_timeout_ms`, from its first byte | `header` |
//! | no next request on a keep-alive connection | `keep_alive_idle_ms`, since the last response | `keep_alive` |
//! | the client does not read its response | `send_timeout_ms` without progress | `send` |
//!
//! While a request is served, the body's own timeouts apply instead (see
//! [`body`](crate::body)).

use crate::config::{ClientConfig, ms};
use crate::metrics::Timeout;
use crate::problem::Problem;
use crate::proxy::Downstream;
use bistro_http_io::{Connection, Exchanges, TimedOut, Timeouts};
use bytes::Bytes;
use std::sync::OnceLock;

/// The three client timeouts, copied out of the configuration.
pub(crate) type ClientTimeouts = Timeouts;

impl From<&ClientConfig> for ClientTimeouts {
    fn from(c: &ClientConfig) -> Self {
        Timeouts {
            header: ms(c.header_read_timeout_ms),
            idle: ms(c.keep_alive_idle_ms),
            send: Some(ms(c.send_timeout_ms)),
        }
    }
}

impl Connection for Downstream {
    fn exchanges(&self) -> &Exchanges {
        &self.exchanges
    }

    fn timed_out(&self, timeout: TimedOut) {
        let kind = match timeout {
            TimedOut::First | TimedOut::Head => Timeout::Header,
            TimedOut::Idle => Timeout::KeepAlive,
            TimedOut::Send => Timeout::Send,
        };
        self.worker.counters().timeout(kind);
    }
}

/// The raw `408` written when a head times out, rendered once.
pub(crate) fn request_timeout_answer() -> Bytes {
    static ANSWER: OnceLock<Vec<u8>> = OnceLock::new();
    let answer = ANSWER.get_or_init(|| {
        Problem::request_timeout(
            "the request head did not arrive within the balancer's header timeout; \
             send the whole head at once",
        )
        .raw(None)
    });
    // Static: each connection holds it without a copy or a reference count.
    Bytes::from_static(answer)
}
