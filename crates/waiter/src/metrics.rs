//! What the waiter counts, exported at `GET /metrics` in the Prometheus text format.
//!
//! Request counts and latencies are labelled by *route* (the matched path pattern such
//! as `/v1/orders/{id}`, never the raw path, so label sets stay bounded whatever clients
//! send). Store operations come from the [`Instrumented`] wrapper, which is how a reader
//! sees what statelessness costs: one store round trip per read, one compare-and-set per
//! write. The session and order gauges come from counts cached by the sweeper's tick, so
//! scraping never puts load on a central store.

use crate::replication::Replication;
use bistro_metrics::{Encoder, Histogram, LATENCY_BUCKETS};
use bistro_store::{Counts, Instrumented};
use http::Method;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// The route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The waiter's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per route: found under a read lock by the route's `&str` (no allocation), so
    /// requests on different routes, or on the same one, never queue behind a writer
    /// except the first time a route is seen.
    routes: RwLock<HashMap<Box<str>, Arc<RouteStats>>>,
    cas_conflicts: AtomicU64,
    sessions_refused: AtomicU64,
    idempotent_replays: AtomicU64,
    kitchen_transitions: AtomicU64,
    counts: Mutex<Option<Counts>>,
    tcp_open: AtomicI64,
    tcp_accepted: AtomicU64,
    tcp_refused: AtomicU64,
    tcp_commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// One route's requests: a latency histogram (lock-free) and the count per method and
/// status. A route sees a handful of (method, status) pairs, so a short list scanned
/// under an uncontended lock beats a map.
#[derive(Debug)]
struct RouteStats {
    durations: Histogram,
    counts: Mutex<Vec<(&'static str, u16, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay meaningful after a panic elsewhere; never let one poison /metrics.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Records one answered request.
    pub fn record_request(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let known = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .cloned();
        let stats = known.unwrap_or_else(|| {
            let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
            Arc::clone(routes.entry(route.into()).or_insert_with(|| {
                Arc::new(RouteStats {
                    durations: Histogram::new(LATENCY_BUCKETS),
                    counts: Mutex::new(Vec::new()),
                })
            }))
        });
        stats.durations.observe(elapsed);
        let method = method_label(method);
        let mut counts = lock(&stats.counts);
        match counts
            .iter_mut()
            .find(|(m, s, _)| *s == status && *m == method)
        {
            Some((_, _, n)) => *n += 1,
            None => counts.push((method, status, 1)),
        }
    }

    /// Every route's stats, sorted by route (a stable `/metrics`).
    fn routes(&self) -> Vec<(String, Arc<RouteStats>)> {
        let mut routes: Vec<(String, Arc<RouteStats>)> = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(r, s)| (r.to_string(), Arc::clone(s)))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    }

    /// Counts a lost compare-and-set.
    pub fn cas_conflict(&self) {
        self.cas_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a replayed idempotent response.
    /// A new session refused by the session rate or cap.
    pub fn session_refused(&self) {
        self.sessions_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn idempotent_replay(&self) {
        self.idempotent_replays.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a kitchen step this waiter stored.
    pub fn kitchen_transition(&self) {
        self.kitchen_transitions.fetch_add(1, Ordering::Relaxed);
    }

    /// Kitchen steps this waiter stored so far.
    #[cfg(test)]
    pub fn kitchen_transitions(&self) -> u64 {
        self.kitchen_transitions.load(Ordering::Relaxed)
    }

    /// A TCP connection was accepted (and will be served).
    pub fn tcp_connection_accepted(&self) {
        self.tcp_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP connection was refused at the connection limit.
    pub fn tcp_connection_refused(&self) {
        self.tcp_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP connection started being served.
    pub fn tcp_connection_opened(&self) {
        self.tcp_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A served TCP connection closed.
    pub fn tcp_connection_closed(&self) {
        self.tcp_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one TCP command by command word and result (`ok` or the error kind).
    pub fn tcp_command(&self, command: &'static str, result: &'static str) {
        *lock(&self.tcp_commands)
            .entry((command, result))
            .or_insert(0) += 1;
    }

    /// The sessions the store held at the last count, if one was taken.
    pub fn sessions_held(&self) -> Option<u64> {
        lock(&self.counts).map(|c| c.sessions)
    }

    /// Replaces the cached store counts.
    pub fn set_counts(&self, counts: Counts) {
        *lock(&self.counts) = Some(counts);
    }

    /// Renders every family as Prometheus text.
    pub fn render(
        &self,
        store: &Instrumented,
        replication: Option<&Replication>,
        handoff: Option<&crate::handoff::Handoff>,
    ) -> String {
        let mut enc = Encoder::new();

        let routes = self.routes();
        let mut requests: Vec<((String, &'static str, String), u64)> = Vec::new();
        for (route, stats) in &routes {
            let mut counts = lock(&stats.counts).clone();
            counts.sort_unstable();
            requests.extend(
                counts
                    .into_iter()
                    .map(|(method, status, n)| ((route.clone(), method, status.to_string()), n)),
            );
        }
        let labels: Vec<[(&str, &str); 3]> = requests
            .iter()
            .map(|((route, method, status), _)| {
                [
                    ("route", route.as_str()),
                    ("method", *method),
                    ("status", status.as_str()),
                ]
            })
            .collect();
        let series: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(&requests)
            .map(|(l, (_, n))| (&l[..], *n))
            .collect();
        enc.counter(
            "bistro_http_requests_total",
            "HTTP requests answered, by route, method and status.",
            &series,
        );

        let labels: Vec<[(&str, &str); 1]> = routes
            .iter()
            .map(|(r, _)| [("route", r.as_str())])
            .collect();
        let series: Vec<(&[(&str, &str)], &Histogram)> = labels
            .iter()
            .zip(&routes)
            .map(|(l, (_, s))| (&l[..], &s.durations))
            .collect();
        enc.histogram(
            "bistro_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            &series,
        );

        let counts = *lock(&self.counts);
        let gauge = |v: Option<u64>| v.map(|n| vec![(&[][..], n as f64)]).unwrap_or_default();
        enc.gauge(
            "bistro_sessions",
            "Sessions held by the store (as of the last sweep).",
            &gauge(counts.map(|c| c.sessions)),
        );
        enc.gauge(
            "bistro_orders",
            "Orders held by the store (as of the last sweep).",
            &gauge(counts.map(|c| c.orders)),
        );

        let ops = store.op_counts();
        let labels: Vec<[(&str, &str); 2]> = ops
            .iter()
            .flat_map(|c| {
                [
                    [("op", c.op.label()), ("result", "ok")],
                    [("op", c.op.label()), ("result", "failed")],
                ]
            })
            .collect();
        let values: Vec<u64> = ops.iter().flat_map(|c| [c.ok, c.failed]).collect();
        let series: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(values)
            .map(|(l, v)| (&l[..], v))
            .collect();
        enc.counter(
            "bistro_store_ops_total",
            "Store operations, by operation and result.",
            &series,
        );

        let one = |a: &AtomicU64| [(&[][..], a.load(Ordering::Relaxed))];
        enc.counter(
            "bistro_cas_conflicts_total",
            "Writes that lost a compare-and-set to a concurrent writer.",
            &one(&self.cas_conflicts),
        );
        enc.counter(
            "bistro_sessions_refused_total",
            "New sessions refused by the session rate or the session cap.",
            &one(&self.sessions_refused),
        );
        enc.counter(
            "bistro_idempotent_replays_total",
            "Requests answered from a stored idempotent response.",
            &one(&self.idempotent_replays),
        );
        enc.counter(
            "bistro_kitchen_transitions_total",
            "Kitchen steps (start cooking, ready) stored by this waiter.",
            &one(&self.kitchen_transitions),
        );
        self.render_tcp(&mut enc);
        if let Some(r) = replication {
            r.render(&mut enc);
        }
        if let Some(h) = handoff {
            let s = h.status();
            enc.counter(
                "bistro_handoff_sessions_total",
                "Sessions handed off: moved to another waiter (out), taken from one (in), left here because they kept changing (busy) or the target failed (failed).",
                &[
                    (&[("result", "out")][..], s.moved_out),
                    (&[("result", "in")][..], s.moved_in),
                    (&[("result", "busy")][..], s.busy),
                    (&[("result", "failed")][..], s.failed),
                ],
            );
            enc.gauge(
                "bistro_handoff_forwarding",
                "Sessions this waiter handed on and answers 421 session-moved for.",
                &[(&[][..], s.forwarding as f64)],
            );
        }
        enc.finish()
    }

    fn render_tcp(&self, enc: &mut Encoder) {
        enc.gauge(
            "bistro_tcp_connections",
            "TCP protocol connections open now.",
            &[(&[][..], self.tcp_open.load(Ordering::Relaxed) as f64)],
        );
        enc.counter(
            "bistro_tcp_connections_total",
            "TCP protocol connections, accepted or refused at the connection limit.",
            &[
                (
                    &[("result", "accepted")][..],
                    self.tcp_accepted.load(Ordering::Relaxed),
                ),
                (
                    &[("result", "refused")][..],
                    self.tcp_refused.load(Ordering::Relaxed),
                ),
            ],
        );
        let commands: Vec<((&str, &str), u64)> = lock(&self.tcp_commands)
            .iter()
            .map(|(k, n)| (*k, *n))
            .collect();
        let labels: Vec<[(&str, &str); 2]> = commands
            .iter()
            .map(|((command, result), _)| [("command", *command), ("result", *result)])
            .collect();
        let series: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(&commands)
            .map(|(l, (_, n))| (&l[..], *n))
            .collect();
        enc.counter(
            "bistro_tcp_commands_total",
            "TCP protocol commands, by command word and result (ok or the error kind).",
            &series,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bistro_store::{MemoryStore, StoreConfig};

    #[test]
    fn renders_every_family_with_bounded_labels() {
        let m = Metrics::default();
        m.record_request(
            "/v1/orders/{id}",
            &Method::GET,
            200,
            Duration::from_millis(3),
        );
        m.record_request(
            "/v1/orders/{id}",
            &Method::GET,
            200,
            Duration::from_millis(4),
        );
        m.record_request(
            UNMATCHED_ROUTE,
            &Method::from_bytes(b"BREW").unwrap(),
            404,
            Duration::ZERO,
        );
        m.cas_conflict();
        m.kitchen_transition();
        m.tcp_connection_accepted();
        m.tcp_connection_opened();
        m.tcp_command("ADD", "ok");
        m.tcp_command("ADD", "ok");
        m.tcp_command("PLACE", "empty-order");
        m.set_counts(Counts {
            sessions: 2,
            orders: 5,
        });
        let store = Instrumented::new(
            Arc::new(MemoryStore::new(StoreConfig::default())),
            Duration::from_secs(1),
        );
        let text = m.render(&store, None, None);
        for needle in [
            "bistro_http_requests_total{route=\"/v1/orders/{id}\",method=\"GET\",status=\"200\"} 2\n",
            "bistro_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1\n",
            "bistro_http_request_duration_seconds_count{route=\"/v1/orders/{id}\"} 2\n",
            "bistro_sessions 2\n",
            "bistro_orders 5\n",
            "bistro_store_ops_total{op=\"get_order\",result=\"failed\"} 0\n",
            "bistro_cas_conflicts_total 1\n",
            "bistro_idempotent_replays_total 0\n",
            "bistro_kitchen_transitions_total 1\n",
            "bistro_tcp_connections 1\n",
            "bistro_tcp_connections_total{result=\"accepted\"} 1\n",
            "bistro_tcp_commands_total{command=\"ADD\",result=\"ok\"} 2\n",
            "bistro_tcp_commands_total{command=\"PLACE\",result=\"empty-order\"} 1\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
