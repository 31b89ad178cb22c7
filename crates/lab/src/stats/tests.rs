use super::*;

fn ok(at_ms: u64, latency_ms: u64) -> Sample {
    Sample {
        at_us: at_ms * 1000,
        latency_us: latency_ms * 1000,
        lag_us: 0,
        step: Step::Poll,
        error: None,
    }
}

fn err(at_ms: u64, latency_ms: u64, kind: ErrorKind) -> Sample {
    Sample {
        error: Some(kind),
        ..ok(at_ms, latency_ms)
    }
}

#[test]
fn percentiles_of_a_known_distribution() {
    // 1 ms .. 1000 ms, one each: p50 = 500 ms, p99 = 990 ms, max = 1000 ms (±0.1 %).
    let l = latency((1..=1000).map(|ms| ms * 1000)).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.001;
    assert_eq!(l.count, 1000);
    assert!(close(l.p50_ms, 500.0), "{l:?}");
    assert!(close(l.p90_ms, 900.0), "{l:?}");
    assert!(close(l.p99_ms, 990.0), "{l:?}");
    assert!(close(l.p999_ms, 999.0), "{l:?}");
    assert!(close(l.max_ms, 1000.0), "{l:?}");
    assert!(close(l.mean_ms, 500.5), "{l:?}");
    assert!(latency(std::iter::empty()).is_none());
}

#[test]
fn latency_counts_only_answered_requests_and_errors_are_counted_by_kind() {
    let samples = vec![
        ok(0, 2),
        ok(0, 4),
        err(0, 2000, ErrorKind::Timeout),
        err(10, 1, ErrorKind::SessionLost),
        err(20, 1, ErrorKind::SessionLost),
    ];
    let l = ok_latency(&samples).unwrap();
    assert_eq!(l.count, 2);
    assert!(
        l.max_ms < 5.0,
        "a timeout is an error, not a latency: {l:?}"
    );
    let by_kind = errors_by_kind(&samples);
    assert_eq!(by_kind.get("session-lost"), Some(&2));
    assert_eq!(by_kind.get("timeout"), Some(&1));
    assert_eq!(by_kind.len(), 2);
    assert_eq!(
        latency_by_step(&samples).get("poll").map(|l| l.count),
        Some(2)
    );
}

#[test]
fn requests_are_bucketed_by_the_second_they_ended() {
    let samples = vec![
        ok(100, 50),
        ok(900, 200),
        err(1500, 10, ErrorKind::Other5xx),
        ok(2999, 2),
    ];
    let s = per_second(&samples, 2.0);
    assert_eq!(
        s.len(),
        4,
        "covers the duration and the stragglers that ended after it"
    );
    assert_eq!((s[0].ok, s[0].errors), (1, 0));
    assert_eq!(
        (s[1].ok, s[1].errors),
        (1, 1),
        "900 ms + 200 ms ends in second 1"
    );
    assert_eq!((s[2].ok, s[3].ok), (0, 1));
    assert_eq!(peak_per_second(&s, 2.0), 1);
    assert_eq!(
        count_per_second(&[0, 999_999, 1_000_000, 9_000_000], 3),
        vec![2, 1, 0]
    );
}

#[test]
fn a_run_splits_before_during_and_after_a_fault() {
    // 10 answers per second for 10 s; from 4 s to 6 s half of them fail.
    let mut samples = Vec::new();
    for i in 0..100u64 {
        let at = i * 100;
        if (4000..6000).contains(&at) && i % 2 == 0 {
            samples.push(err(at, 5, ErrorKind::SessionLost));
        } else {
            samples.push(ok(at, 5));
        }
    }
    let p = phases(&samples, 4.0, 6.0, 10.0);
    assert_eq!((p.before.ok, p.before.errors), (40, 0));
    assert_eq!((p.during.ok, p.during.errors), (10, 10));
    assert_eq!((p.after.ok, p.after.errors), (40, 0));
    assert_eq!(p.before.throughput_rps, Some(10.0));
    assert_eq!(p.during.error_rate, Some(0.5));
    assert_eq!(p.after.error_rate, Some(0.0));
    assert!(p.during.latency.is_some());
    let empty = phase(&samples, 10.0, 10.0);
    assert_eq!(
        (empty.throughput_rps, empty.error_rate, empty.latency),
        (None, None, None)
    );
}

/// 100 requests per second, each lasting 1 ms; `errors(second_tenth)` says whether the
/// request at that tenth of a second fails (10 ms apart, so 10 per tenth).
fn run(seconds: u64, errors: impl Fn(u64) -> bool) -> Vec<Sample> {
    (0..seconds * 100)
        .map(|i| {
            let at = i * 10;
            if errors(at / 100) {
                err(at, 1, ErrorKind::SessionLost)
            } else {
                ok(at, 1)
            }
        })
        .collect()
}

#[test]
fn recovery_is_counted_in_tenths_of_a_second_from_the_fault() {
    // A kill at 2.3 s; requests fail from 2.3 s to 3.6 s.
    let samples = run(8, |tenth| (23..36).contains(&tenth));
    let r = recovery(&samples, 2.3, 2.3, 8.0);
    assert!(r.impacted);
    // Every step up to [3.5, 3.6) fails; from 3.6 the step and its second are clean.
    assert_eq!(r.recovered_at_s, Some(3.6));
    assert_eq!(r.recovery_s, Some(1.3), "{r:?}");
    // A 100 ms outage reads 0.1 s, not a whole second.
    let samples = run(8, |tenth| tenth == 23);
    assert_eq!(recovery(&samples, 2.3, 2.3, 8.0).recovery_s, Some(0.1));
}

#[test]
fn a_fault_without_visible_impact_recovers_at_once() {
    // 1 failure among the 200 requests of the second after the fault: under 1 %.
    let mut samples = run(5, |_| false);
    samples.extend(run(5, |_| false));
    samples[150].error = Some(ErrorKind::Other5xx);
    let r = recovery(&samples, 1.2, 1.2, 5.0);
    assert_eq!(
        (r.impacted, r.recovered_at_s, r.recovery_s),
        (false, Some(1.2), Some(0.0))
    );
}

#[test]
fn a_stall_is_not_health() {
    // Nothing completes from 1 s to 3 s.
    let samples: Vec<Sample> = run(6, |_| false)
        .into_iter()
        .filter(|s| !(1000..3000).contains(&(s.at_us / 1000)))
        .collect();
    let r = recovery(&samples, 1.0, 1.0, 6.0);
    assert!(r.impacted);
    // [2.1, 3.1) holds only good requests, but its first step holds none: not health.
    assert_eq!(r.recovered_at_s, Some(3.0));
}

#[test]
fn a_fault_with_a_duration_recovers_from_its_end() {
    // A pause from 2.0 s to 4.01 s with failures during it; clean from its end.
    let samples = run(8, |tenth| (20..40).contains(&tenth));
    let r = recovery(&samples, 2.0, 4.01, 8.0);
    assert!(r.impacted, "the pause itself failed requests");
    assert_eq!(
        r.recovered_at_s,
        Some(4.01),
        "the first second after the end is already healthy"
    );
    assert_eq!(r.recovery_s, Some(2.01));
    // The same pause without failures had no impact.
    let clean = run(8, |_| false);
    assert_eq!(recovery(&clean, 2.0, 4.01, 8.0).recovery_s, Some(0.0));
}

#[test]
fn a_service_that_never_recovers_says_so() {
    let samples = run(4, |tenth| tenth >= 10);
    assert_eq!(
        recovery(&samples, 1.0, 1.0, 4.0),
        Recovery {
            impacted: true,
            recovered_at_s: None,
            recovery_s: None
        }
    );
}

#[test]
fn a_second_is_healthy_under_one_percent_errors() {
    let sec = |ok, errors| Second {
        second: 0,
        ok,
        errors,
    };
    assert!(sec(199, 1).healthy());
    assert!(!sec(99, 1).healthy());
    assert!(!sec(0, 0).healthy());
}
