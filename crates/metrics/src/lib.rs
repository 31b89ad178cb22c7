//! # bistro-metrics: counters and histograms in the Prometheus text format
//!
//! The waiter and the balancer both export `/metrics`. What they need is small: counters,
//! gauges and latency histograms, updated on the hot path without locks, and rendered as
//! Prometheus text (exposition format 0.0.4). A full metrics framework would cost more
//! build time and more per-request work than these few atomics, so bistro has its own.
//!
//! ```
//! use bistro_metrics::{Encoder, Histogram, LATENCY_BUCKETS};
//! let h = Histogram::new(LATENCY_BUCKETS);
//! h.observe_secs(0.002);
//! let mut enc = Encoder::new();
//! enc.counter("demo_requests_total", "Requests.", &[(&[("code", "200")], 3)]);
//! enc.histogram("demo_latency_seconds", "Latency.", &[(&[], &h)]);
//! let text = enc.finish();
//! assert!(text.contains("demo_requests_total{code=\"200\"} 3"));
//! assert!(text.contains("demo_latency_seconds_count 1"));
//! ```

#![warn(missing_docs)]

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds (seconds) for request latencies: 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// A histogram with fixed bucket bounds; `observe` is a few relaxed atomic adds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts; the last slot is the +Inf bucket.
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe_secs(&self, secs: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }

    /// Records a duration.
    pub fn observe(&self, d: std::time::Duration) {
        self.observe_secs(d.as_secs_f64());
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The bucket bounds (seconds, ascending), as given to [`Histogram::new`].
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// The observations per bucket, not cumulative: one count per bound, then the
    /// `+Inf` bucket's. Two of these taken a while apart give, subtracted, the
    /// histogram of that while (a live view's latest second, say).
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The `q` quantile (0 to 1) of non-cumulative `counts` over `bounds` (as
/// [`Histogram::bucket_counts`] gives them), in seconds; `None` without observations.
///
/// As Prometheus' `histogram_quantile` does, it assumes the observations are spread
/// evenly inside their bucket and interpolates linearly; a quantile that falls in the
/// `+Inf` bucket is reported as the largest bound (the histogram knows no more).
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    bounds.last().copied()
}

/// Label pairs of one series.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Builds one exposition document, family by family.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    /// An empty document.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn series(&mut self, name: &str, labels: Labels<'_>, extra: Option<(&str, &str)>, value: &str) {
        self.out.push_str(name);
        let mut pairs = labels.iter().copied().chain(extra).peekable();
        if pairs.peek().is_some() {
            self.out.push('{');
            for (i, (k, v)) in pairs.enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter family.
    pub fn counter(&mut self, name: &str, help: &str, series: &[(Labels<'_>, u64)]) {
        self.header(name, help, "counter");
        for (labels, v) in series {
            self.series(name, labels, None, &v.to_string());
        }
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str, series: &[(Labels<'_>, f64)]) {
        self.header(name, help, "gauge");
        for (labels, v) in series {
            self.series(name, labels, None, &v.to_string());
        }
    }

    /// A histogram family.
    pub fn histogram(&mut self, name: &str, help: &str, series: &[(Labels<'_>, &Histogram)]) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (labels, h) in series {
            let mut cumulative = 0u64;
            for (i, b) in h.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                let le = match h.bounds.get(i) {
                    Some(bound) => bound.to_string(),
                    None => "+Inf".to_string(),
                };
                self.series(&bucket, labels, Some(("le", &le)), &cumulative.to_string());
            }
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            self.series(&format!("{name}_sum"), labels, None, &sum.to_string());
            self.series(
                &format!("{name}_count"),
                labels,
                None,
                &cumulative.to_string(),
            );
        }
    }

    /// The finished document.
    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let h = Histogram::new(&[0.1, 1.0]);
        for s in [0.05, 0.5, 0.5, 5.0] {
            h.observe_secs(s);
        }
        let mut enc = Encoder::new();
        enc.histogram("x", "X.", &[(&[("a", "b")], &h)]);
        let text = enc.finish();
        assert!(text.contains("x_bucket{a=\"b\",le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("x_bucket{a=\"b\",le=\"1\"} 3\n"), "{text}");
        assert!(text.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_count{a=\"b\"} 4\n"), "{text}");
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let bounds = &[0.1, 0.2, 0.4];
        assert_eq!(quantile(bounds, &[0, 0, 0, 0], 0.99), None);
        // 100 observations, all between 0.1 and 0.2: p50 is half-way through it.
        let mid = quantile(bounds, &[0, 100, 0, 0], 0.5).unwrap();
        assert!((mid - 0.15).abs() < 1e-9, "{mid}");
        // 99 fast ones and one slow one: p99 is still in the fast bucket, p100 is not.
        let p99 = quantile(bounds, &[99, 0, 1, 0], 0.99).unwrap();
        assert!(p99 <= 0.1, "{p99}");
        let p100 = quantile(bounds, &[99, 0, 1, 0], 1.0).unwrap();
        assert!((p100 - 0.4).abs() < 1e-9, "{p100}");
        // Past the largest bound, the largest bound is all that is known.
        assert_eq!(quantile(bounds, &[0, 0, 0, 5], 0.99), Some(0.4));
        let h = Histogram::new(bounds);
        h.observe_secs(0.15);
        h.observe_secs(9.0);
        assert_eq!(h.bucket_counts(), [0, 1, 0, 1]);
        assert_eq!(h.bounds(), bounds);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut enc = Encoder::new();
        enc.gauge("g", "G.", &[(&[("k", "a\"b\n")], 1.5)]);
        assert!(enc.finish().contains("g{k=\"a\\\"b\\n\"} 1.5"));
    }
}
