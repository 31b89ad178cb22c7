//! How fast the lab's own HTTP client can go: the check that the load generator is not
//! what limits a measurement.
//!
//! [`max_rate`] runs a closed loop on `connections` keep-alive connections, each sending
//! `GET path` as soon as the previous answer arrived, for `duration`. The diners use the
//! same client, so if a scenario's request rate is well below this figure (measured on
//! the same machine against a trivial endpoint), the generator had headroom. Compare it
//! with `wrk` on the same endpoint to see what the client itself costs.

use crate::stats::{self, Latency};
use bistro_client::Client;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The outcome of [`max_rate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateResult {
    /// Connections used.
    pub connections: usize,
    /// Measured wall-clock seconds.
    pub seconds: f64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed (non-2xx or no answer).
    pub errors: u64,
    /// 2xx answers per second.
    pub rate_per_second: f64,
    /// Latency of the 2xx answers.
    pub latency: Option<Latency>,
}

/// Sends `GET path` to `addr` in a closed loop on `connections` keep-alive connections
/// for `duration`, and reports the rate reached. Only meant for loopback addresses.
pub async fn max_rate(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> RateResult {
    let connections = connections.max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = JoinSet::new();
    for _ in 0..connections {
        let path = path.to_string();
        set.spawn(async move {
            let client = Client::new(addr).with_timeout(Duration::from_secs(5));
            let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant bounds are valid");
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let sent = Instant::now();
                match client.get(&path).await {
                    Ok(resp) if resp.status.is_success() => {
                        ok += 1;
                        hist.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                    }
                    Ok(_) => errors += 1,
                    Err(e) => {
                        errors += 1;
                        if e.is_connect() {
                            // Nothing listens: do not spin on refused connections.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            (ok, errors, hist)
        });
    }
    let mut total =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid");
    let (mut ok, mut errors) = (0, 0);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((o, e, h)) => {
                ok += o;
                errors += e;
                if let Err(err) = total.add(&h) {
                    tracing::warn!("cannot merge a latency histogram: {err}");
                }
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => tracing::error!("a rate task was cancelled: {e}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    RateResult {
        connections,
        seconds,
        ok,
        errors,
        rate_per_second: ok as f64 / seconds,
        latency: stats::summarize(&total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A minimal keep-alive HTTP/1.1 server answering every request with `200 ok`.
    async fn tiny_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if sock.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_rate_of_a_local_server_is_measured() {
        let addr = tiny_server().await;
        let r = max_rate(addr, "/healthz", 4, Duration::from_millis(300)).await;
        assert_eq!(r.connections, 4);
        assert_eq!(r.errors, 0);
        assert!(r.ok > 50, "{r:?}");
        assert!(r.seconds >= 0.3 && r.seconds < 6.0, "{r:?}");
        assert!(r.rate_per_second > 100.0, "{r:?}");
        assert_eq!(r.latency.map(|l| l.count), Some(r.ok));
    }

    #[tokio::test]
    async fn a_closed_port_counts_errors_without_spinning() {
        let port = crate::process::free_port().unwrap();
        let r = max_rate(
            SocketAddr::from(([127, 0, 0, 1], port)),
            "/",
            1,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(r.ok, 0);
        assert!(r.errors > 0 && r.errors < 1000, "{r:?}");
        assert!(r.latency.is_none());
    }
}
