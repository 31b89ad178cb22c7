//! The report: medians over rounds, ratios, the table and the verdicts on the targets.
//!
//! Pure functions over the measured rounds, so the maths is tested without sockets.
//! Each figure is the median over the rounds, taken per column (the median rate and the
//! median p99 may come from different rounds): with three rounds one disturbed round,
//! common on a shared two-core machine, moves no figure. Ratios compare medians.
//!
//! The targets (from the anchors): bistro with sticky routing on sustains at least 1.1×
//! the requests/s of the better of nginx and HAProxy in the same run, with a p99 no worse
//! than that peer's, and sticky routing costs at most 5% of throughput over round robin.

use std::fmt::Write as _;

/// Throughput bistro's sticky row must reach, as a multiple of the best peer's.
pub(super) const PEER_TARGET: f64 = 1.10;
/// Most throughput sticky routing may cost over round robin.
pub(super) const STICKY_COST_TARGET: f64 = 0.05;

/// What a row measures, for the ratios and the verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Straight to one waiter: the ceiling.
    Direct,
    /// bistro's balancer.
    Bistro { sticky: bool },
    /// nginx or HAProxy.
    Peer,
}

/// One round of one setup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Round {
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) requests: u64,
    pub(super) errors: u64,
    /// The proxy's CPU time per request in microseconds (none for direct).
    pub(super) cpu_us: Option<f64>,
    /// The part of `cpu_us` spent in user space (the rest is the kernel's).
    pub(super) user_us: Option<f64>,
    /// The load generator's CPU time per request in microseconds (built-in only).
    pub(super) load_cpu_us: Option<f64>,
}

/// One setup and its rounds.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) label: String,
    pub(super) role: Role,
    pub(super) rounds: Vec<Round>,
}

/// Medians over a row's rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Summary {
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) cpu_us: Option<f64>,
    pub(super) user_us: Option<f64>,
    pub(super) load_cpu_us: Option<f64>,
    pub(super) errors: u64,
}

/// The median (mean of the middle two for an even count); NaN for none.
pub(super) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Row {
    pub(super) fn summary(&self) -> Summary {
        let col = |f: fn(&Round) -> f64| median(&self.rounds.iter().map(f).collect::<Vec<_>>());
        let some = |f: fn(&Round) -> Option<f64>| {
            let v: Vec<f64> = self.rounds.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(&v))
        };
        Summary {
            rps: col(|r| r.rps),
            p50_ms: col(|r| r.p50_ms),
            p99_ms: col(|r| r.p99_ms),
            cpu_us: some(|r| r.cpu_us),
            user_us: some(|r| r.user_us),
            load_cpu_us: some(|r| r.load_cpu_us),
            errors: self.rounds.iter().map(|r| r.errors).sum(),
        }
    }
}

fn find(rows: &[Row], role: Role) -> Option<(&Row, Summary)> {
    rows.iter()
        .find(|r| r.role == role)
        .map(|r| (r, r.summary()))
}

/// The peer row with the highest median rate.
pub(super) fn best_peer(rows: &[Row]) -> Option<(&Row, Summary)> {
    rows.iter()
        .filter(|r| r.role == Role::Peer)
        .map(|r| (r, r.summary()))
        .max_by(|a, b| a.1.rps.total_cmp(&b.1.rps))
}

fn thousands(rps: f64) -> String {
    if rps >= 1000.0 {
        format!("{:.1}k", rps / 1000.0)
    } else {
        format!("{rps:.0}")
    }
}

/// The results as a Markdown table (readable as is in a terminal).
pub(super) fn table(rows: &[Row]) -> String {
    let direct = find(rows, Role::Direct).map(|(_, s)| s.rps);
    let peer = best_peer(rows).map(|(_, s)| s.rps);
    let ratio = |base: Option<f64>, rps: f64| match base {
        Some(b) if b > 0.0 => format!("{:.2}", rps / b),
        _ => "—".into(),
    };
    let lines: Vec<[String; 11]> = rows
        .iter()
        .map(|row| {
            let s = row.summary();
            let per_round: Vec<String> = row.rounds.iter().map(|r| thousands(r.rps)).collect();
            [
                row.label.clone(),
                format!("{:.0}", s.rps),
                format!("{:.2}", s.p50_ms),
                format!("{:.2}", s.p99_ms),
                ratio(direct, s.rps),
                ratio(peer, s.rps),
                s.cpu_us.map_or_else(|| "—".into(), |c| format!("{c:.1}")),
                s.user_us.map_or_else(|| "—".into(), |c| format!("{c:.1}")),
                s.load_cpu_us
                    .map_or_else(|| "—".into(), |c| format!("{c:.1}")),
                s.errors.to_string(),
                per_round.join(" / "),
            ]
        })
        .collect();
    let header = [
        "setup",
        "req/s",
        "p50 ms",
        "p99 ms",
        "vs direct",
        "vs best peer",
        "proxy CPU µs/req",
        "of it user",
        "load gen CPU µs/req",
        "errors",
        "req/s per round",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &[String]| {
        out.push('|');
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            // Text left, figures right.
            if i == 0 || i == cells.len() - 1 {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    push(&header.map(String::from));
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let dashes = "-".repeat(w.saturating_sub(1).max(2));
            if i == 0 || i == widths.len() - 1 {
                format!("{dashes}-")
            } else {
                format!("{dashes}:")
            }
        })
        .collect();
    push(&rule);
    for line in &lines {
        push(line);
    }
    out
}

/// The verdicts on the targets, one sentence each.
pub(super) fn verdicts(rows: &[Row]) -> Vec<String> {
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut out = Vec::new();
    let sticky = find(rows, Role::Bistro { sticky: true });
    let rr = find(rows, Role::Bistro { sticky: false });
    match (sticky, best_peer(rows)) {
        (Some((_, s)), Some((peer, p))) => {
            let ratio = s.rps / p.rps;
            out.push(format!(
                "throughput: bistro sticky is {ratio:.2}× the best peer ({}) — target ≥ {PEER_TARGET:.2}×: {}",
                peer.label,
                met(ratio >= PEER_TARGET)
            ));
            out.push(format!(
                "p99: bistro sticky {:.2} ms vs {:.2} ms for the best peer — target no worse: {}",
                s.p99_ms,
                p.p99_ms,
                met(s.p99_ms <= p.p99_ms)
            ));
            if let (Some(c), Some(pc)) = (s.cpu_us, p.cpu_us) {
                let user = |u: Option<f64>| u.map_or_else(String::new, |u| format!(" ({u:.1} in user space)"));
                out.push(format!(
                    "CPU: bistro sticky spends {c:.1} µs per request{}, the best peer {pc:.1} µs{} ({:+.0}%)",
                    user(s.user_us),
                    user(p.user_us),
                    (c / pc - 1.0) * 100.0
                ));
            }
        }
        (Some(_), None) => out.push(
            "no nginx or HAProxy was measured, so the targets relative to them are not judged in this run"
                .into(),
        ),
        _ => {}
    }
    if let (Some((_, s)), Some((_, r))) = (sticky, rr) {
        let cost = r.rps / s.rps - 1.0;
        let cpu = match (s.cpu_us, r.cpu_us) {
            (Some(c), Some(rc)) => {
                format!(", {:+.0}% proxy CPU per request", (c / rc - 1.0) * 100.0)
            }
            _ => String::new(),
        };
        out.push(format!(
            "sticky cost: {:.0} req/s with round robin, {:.0} with sticky cookies: {:+.1}% throughput{cpu} — target ≤ {:.0}%: {}",
            r.rps,
            s.rps,
            cost * 100.0,
            STICKY_COST_TARGET * 100.0,
            met(cost <= STICKY_COST_TARGET)
        ));
    }
    for row in rows {
        let s = row.summary();
        if s.errors > 0 {
            out.push(format!(
                "warning: {} had {} failed requests over the rounds; its figures count only successes",
                row.label, s.errors
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(rps: f64, p99: f64, cpu: Option<f64>) -> Round {
        Round {
            rps,
            p50_ms: 0.5,
            p99_ms: p99,
            requests: (rps * 5.0) as u64,
            errors: 0,
            cpu_us: cpu,
            user_us: cpu.map(|c| c / 3.0),
            load_cpu_us: Some(9.0),
        }
    }

    fn row(label: &str, role: Role, rps: [f64; 3], p99: f64, cpu: Option<f64>) -> Row {
        Row {
            label: label.into(),
            role,
            rounds: rps.iter().map(|&r| round(r, p99, cpu)).collect(),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    fn rows() -> Vec<Row> {
        vec![
            row("direct", Role::Direct, [100.0, 120.0, 110.0], 1.0, None),
            row(
                "bistro rr",
                Role::Bistro { sticky: false },
                [60.0, 62.0, 61.0],
                2.0,
                Some(10.0),
            ),
            row(
                "bistro sticky",
                Role::Bistro { sticky: true },
                [59.0, 60.0, 58.0],
                2.0,
                Some(10.5),
            ),
            row("nginx", Role::Peer, [50.0, 50.0, 50.0], 3.0, Some(12.0)),
            row("haproxy", Role::Peer, [40.0, 45.0, 60.0], 1.5, Some(14.0)),
        ]
    }

    #[test]
    fn the_best_peer_is_the_fastest_by_median() {
        let rows = rows();
        let (best, s) = best_peer(&rows).unwrap();
        assert_eq!(best.label, "nginx");
        assert_eq!(s.rps, 50.0);
    }

    #[test]
    fn verdicts_judge_each_target() {
        let v = verdicts(&rows());
        assert!(
            v[0].contains("1.18× the best peer (nginx)") && v[0].ends_with(": met"),
            "{v:?}"
        );
        assert!(v[1].ends_with(": met"), "{v:?}");
        assert!(v[2].contains("-12%"), "{v:?}");
        assert!(
            v[3].contains("+3.4% throughput") && v[3].ends_with(": met"),
            "{v:?}"
        );
    }

    #[test]
    fn the_table_shows_ratios_to_direct_and_to_the_best_peer() {
        let t = table(&rows());
        let sticky = t
            .lines()
            .find(|l| l.starts_with("| bistro sticky"))
            .unwrap();
        let cells: Vec<&str> = sticky.split('|').map(str::trim).collect();
        assert_eq!(cells[2], "59");
        assert_eq!(cells[5], "0.54");
        assert_eq!(cells[6], "1.18");
        assert_eq!(cells[7], "10.5");
        assert_eq!(cells[8], "3.5");
        assert_eq!(cells[9], "9.0");
        let direct = t.lines().find(|l| l.starts_with("| direct")).unwrap();
        assert!(direct.contains("—"));
    }

    #[test]
    fn without_peers_the_peer_targets_are_not_judged() {
        let rows: Vec<Row> = rows()
            .into_iter()
            .filter(|r| r.role != Role::Peer)
            .collect();
        let v = verdicts(&rows);
        assert!(v[0].starts_with("no nginx or HAProxy"));
    }
}
