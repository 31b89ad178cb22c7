//! The report's maths, as pure functions over [`Sample`]s.
//!
//! - **Latency** percentiles come from an HDR histogram (3 significant digits, 1 µs to
//!   1 h), over the requests that got a 2xx answer; failures are counted, not timed.
//! - **Per-second buckets** put each request in the second in which it *ended*: a
//!   throughput chart shows answers per second, and a stall shows as a dip.
//! - **Phases** split a run around a fault: before it, during it (until it ends and the
//!   service has recovered), and after.
//! - **Recovery**: the first second after the fault ended (counted from its end) in
//!   which at least one request completed and under 1 % of the requests failed.

use crate::sample::{ErrorKind, Sample, Step};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Percentiles of `values_us` (microseconds); `None` when there are none.
pub fn latency(values_us: impl IntoIterator<Item = u64>) -> Option<Latency> {
    let mut h =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid");
    for v in values_us {
        h.saturating_record(v.max(1));
    }
    summarize(&h)
}

/// Percentiles of a histogram of microseconds; `None` when it is empty.
pub fn summarize(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    })
}

/// Latency of the successful requests among `samples`.
pub fn ok_latency<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Option<Latency> {
    latency(
        samples
            .into_iter()
            .filter(|s| s.is_ok())
            .map(|s| s.latency_us),
    )
}

/// Latency of the successful requests per step.
pub fn latency_by_step(samples: &[Sample]) -> BTreeMap<String, Latency> {
    Step::ALL
        .iter()
        .filter_map(|&step| {
            ok_latency(samples.iter().filter(|s| s.step == step))
                .map(|l| (step.as_str().to_string(), l))
        })
        .collect()
}

/// Failed requests per kind (kinds that never happened are left out).
pub fn errors_by_kind(samples: &[Sample]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for kind in ErrorKind::ALL {
        let n = samples.iter().filter(|s| s.error == Some(kind)).count() as u64;
        if n > 0 {
            out.insert(kind.as_str().to_string(), n);
        }
    }
    out
}

/// One second of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the load started (this bucket covers `[second, second + 1)`).
    pub second: u32,
    /// Requests that ended with a 2xx answer in this second.
    pub ok: u64,
    /// Requests that ended in failure in this second.
    pub errors: u64,
}

impl Second {
    /// Requests that ended in this second.
    pub fn total(&self) -> u64 {
        self.ok + self.errors
    }

    /// Whether under 1 % failed (and anything completed at all).
    pub fn healthy(&self) -> bool {
        healthy((self.total(), self.errors))
    }
}

/// Buckets every request by the second it ended in; covers at least `duration_s`.
pub fn per_second(samples: &[Sample], duration_s: f64) -> Vec<Second> {
    let last_end = samples.iter().map(Sample::end_us).max().unwrap_or(0);
    let n = (duration_s.ceil() as usize).max((last_end / 1_000_000) as usize + 1);
    let mut out: Vec<Second> = (0..n)
        .map(|i| Second {
            second: i as u32,
            ok: 0,
            errors: 0,
        })
        .collect();
    for s in samples {
        let b = &mut out[(s.end_us() / 1_000_000) as usize];
        if s.is_ok() {
            b.ok += 1;
        } else {
            b.errors += 1;
        }
    }
    out
}

/// Counts events (µs since the start) per second, over `seconds` buckets.
pub fn count_per_second(events_us: &[u64], seconds: usize) -> Vec<u64> {
    let mut out = vec![0; seconds];
    for &t in events_us {
        if let Some(b) = out.get_mut((t / 1_000_000) as usize) {
            *b += 1;
        }
    }
    out
}

/// The best whole second of the run (answers per second), ignoring the seconds after
/// the load stopped, when only stragglers complete.
pub fn peak_per_second(seconds: &[Second], duration_s: f64) -> u64 {
    let full = duration_s.floor() as usize;
    seconds
        .iter()
        .take(full.max(1))
        .map(|s| s.ok)
        .max()
        .unwrap_or(0)
}

/// The figures of one stretch of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Start, seconds since the load started.
    pub from_s: f64,
    /// End (exclusive).
    pub to_s: f64,
    /// Requests that ended with a 2xx answer.
    pub ok: u64,
    /// Requests that ended in failure.
    pub errors: u64,
    /// Answers per second; `None` for an empty stretch.
    pub throughput_rps: Option<f64>,
    /// Failed share of requests; `None` when nothing ended.
    pub error_rate: Option<f64>,
    /// Latency of the answers; `None` when there were none.
    pub latency: Option<Latency>,
}

/// A run split around one fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// From the start to the fault.
    pub before: Phase,
    /// From the fault until it ended and the service recovered.
    pub during: Phase,
    /// From then to the end.
    pub after: Phase,
}

/// The figures of requests that ended in `[from_s, to_s)`.
pub fn phase(samples: &[Sample], from_s: f64, to_s: f64) -> Phase {
    let (from, to) = ((from_s * 1e6) as u64, (to_s * 1e6) as u64);
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| (from..to).contains(&s.end_us()))
        .collect();
    let ok = inside.iter().filter(|s| s.is_ok()).count() as u64;
    let errors = inside.len() as u64 - ok;
    let secs = to_s - from_s;
    Phase {
        from_s,
        to_s,
        ok,
        errors,
        throughput_rps: (secs > 0.0).then(|| ok as f64 / secs),
        error_rate: (ok + errors > 0).then(|| errors as f64 / (ok + errors) as f64),
        latency: ok_latency(inside.iter().copied()),
    }
}

/// Splits a run at `fault_s` and `during_until_s` (clamped to `[fault_s, run_end_s]`).
pub fn phases(samples: &[Sample], fault_s: f64, during_until_s: f64, run_end_s: f64) -> Phases {
    let until = during_until_s.clamp(fault_s, run_end_s.max(fault_s));
    Phases {
        before: phase(samples, 0.0, fault_s),
        during: phase(samples, fault_s, until),
        after: phase(samples, until, run_end_s.max(until)),
    }
}

/// The resolution of [`recovery`]: 100 ms.
pub const RECOVERY_STEP_S: f64 = 0.1;

/// How the service came back after a fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// Whether any second from the fault to the recovery failed 1 % or more of its
    /// requests, or completed none.
    pub impacted: bool,
    /// When the service recovered after the fault ended (to the 100 ms step, see
    /// `recovery`); `None` if it did not.
    pub recovered_at_s: Option<f64>,
    /// Seconds from the fault's start to `recovered_at_s` (0 when never impacted).
    pub recovery_s: Option<f64>,
}

/// Whether a stretch with `total` requests of which `errors` failed is healthy: something
/// completed, and under 1 % failed.
fn healthy((total, errors): (u64, u64)) -> bool {
    total > 0 && errors * 100 < total
}

/// Request end times, sorted, with a running count of failures: how many requests
/// ended (and failed) in any window, by binary search.
struct Ends {
    ends: Vec<u64>,
    failed_before: Vec<u64>,
}

impl Ends {
    fn new(samples: &[Sample]) -> Ends {
        let mut pairs: Vec<(u64, bool)> = samples.iter().map(|s| (s.end_us(), s.is_ok())).collect();
        pairs.sort_unstable();
        let mut failed_before = Vec::with_capacity(pairs.len() + 1);
        failed_before.push(0);
        for (_, ok) in &pairs {
            let last = *failed_before.last().expect("starts with 0");
            failed_before.push(last + u64::from(!ok));
        }
        Ends {
            ends: pairs.into_iter().map(|(e, _)| e).collect(),
            failed_before,
        }
    }

    /// `(requests, failures)` that ended in `[from_s, to_s)`.
    fn window(&self, from_s: f64, to_s: f64) -> (u64, u64) {
        let (from, to) = ((from_s * 1e6) as u64, (to_s * 1e6) as u64);
        let i = self.ends.partition_point(|&e| e < from);
        let j = self.ends.partition_point(|&e| e < to);
        (
            (j - i) as u64,
            self.failed_before[j] - self.failed_before[i],
        )
    }
}

/// The recovery after a fault from `start_s` to `end_s` (equal for an instant fault),
/// looking no further than `run_end_s`.
///
/// Time is counted from the fault, not from the start of the run, and in steps of
/// [`RECOVERY_STEP_S`] (100 ms): the service has recovered at the first step `t` after
/// the fault ended that is healthy itself and starts a healthy second, `[t, t + 1)`.
/// So a reroute that takes 100 ms reads 0.1 s, one that takes 900 ms 0.9 s
/// (whole-second windows used to round both to 1 s). At low request rates a step may
/// see no request at all, which counts as not yet recovered: the figure is then late
/// by up to the gap between requests. While a fault lasts, its whole seconds (and a last
/// partial one of at least a quarter second) decide whether it had an impact at all.
pub fn recovery(samples: &[Sample], start_s: f64, end_s: f64, run_end_s: f64) -> Recovery {
    let ends = Ends::new(samples);
    let end = end_s.max(start_s);
    let mut impacted = false;
    let mut t = start_s;
    while t < end {
        let to = (t + 1.0).min(end);
        if to - t >= 0.25 && !healthy(ends.window(t, to)) {
            impacted = true;
        }
        t += 1.0;
    }
    let mut step = 0u32;
    loop {
        // Steps are counted, not summed, so 0.1 never drifts into 0.30000000000000004.
        let t = end + f64::from(step) * RECOVERY_STEP_S;
        if t + 1.0 > run_end_s + 1e-9 {
            break;
        }
        // The step itself must be healthy too, not only the second it starts: a second
        // that catches only the tail of a stall would otherwise pass for health.
        if healthy(ends.window(t, t + RECOVERY_STEP_S)) && healthy(ends.window(t, t + 1.0)) {
            // Whole milliseconds: the figures read back from report.json exactly.
            let ms = |s: f64| (s * 1000.0).round() / 1000.0;
            let recovery_s = if impacted { ms(t - start_s) } else { 0.0 };
            return Recovery {
                impacted,
                recovered_at_s: Some(ms(t)),
                recovery_s: Some(recovery_s),
            };
        }
        impacted = true;
        step += 1;
    }
    Recovery {
        impacted: true,
        recovered_at_s: None,
        recovery_s: None,
    }
}

#[cfg(test)]
mod tests;
