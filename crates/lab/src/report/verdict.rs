//! One plain-language line per architecture, derived only from its figures: how fast it
//! was compared with the others (median latency of answered requests), what it lost,
//! and how it came back after the first fault.
//!
//! Speed is judged on the median latency rather than throughput: in a closed loop the
//! throughput is mostly set by the diners' think times, so two architectures serve about
//! the same number of requests and differ in how long each one takes.

use super::table::{ms, pct};
use super::{ArchReport, Report, SweepReport};

/// Within this ratio two architectures are "about as fast".
const SAME_SPEED: f64 = 1.1;

/// One line per architecture, in report order, e.g. `stateful: fastest (p50 0.4 ms,
/// 1.3x faster than stateless) but lost 12 of 80 orders when w2 died; recovered 1.0 s
/// after kill w2, 41 errors (1.3%) in all`.
pub fn verdicts(report: &Report) -> Vec<String> {
    let archs = &report.architectures;
    archs
        .iter()
        .map(|a| {
            let others: Vec<&ArchReport> = archs.iter().filter(|o| o.name != a.name).collect();
            let (loss, kept_all) = losses(a);
            let head = match speed(a, &others) {
                // "but" when speed and safety point in different directions.
                Some((speed, quick)) if quick != Some(kept_all) && quick.is_some() => {
                    format!("{speed} but {loss}")
                }
                Some((speed, _)) => format!("{speed} and {loss}"),
                None => loss,
            };
            format!("{}: {head}; {}", a.name, recovery(a))
        })
        .collect()
}

/// The speed clause, and whether it is good news (`Some(true)` faster, `Some(false)`
/// slower, `None` about the same).
fn speed(a: &ArchReport, others: &[&ArchReport]) -> Option<(String, Option<bool>)> {
    let mine = a.latency?.p50_ms;
    let best_other = others
        .iter()
        .filter_map(|o| o.latency.map(|l| (o, l.p50_ms)))
        .min_by(|x, y| x.1.total_cmp(&y.1))?;
    let (other, theirs) = best_other;
    if mine <= 0.0 || theirs <= 0.0 {
        return None;
    }
    Some(if theirs / mine >= SAME_SPEED {
        let fastest = others
            .iter()
            .all(|o| o.latency.is_none_or(|l| l.p50_ms >= mine));
        let word = if fastest { "fastest" } else { "faster" };
        let ratio = theirs / mine;
        (
            format!(
                "{word} (p50 {} ms, {ratio:.1}x faster than {})",
                ms(mine),
                other.name
            ),
            Some(true),
        )
    } else if mine / theirs >= SAME_SPEED {
        (
            format!(
                "slower (p50 {} ms vs {} ms for {})",
                ms(mine),
                ms(theirs),
                other.name
            ),
            Some(false),
        )
    } else {
        (
            format!(
                "about as fast as {} (p50 {} ms vs {} ms)",
                other.name,
                ms(mine),
                ms(theirs)
            ),
            None,
        )
    })
}

/// The loss clause, and whether every acknowledged order was kept as acknowledged.
fn losses(a: &ArchReport) -> (String, bool) {
    let v = &a.verification;
    if v.orders == 0 {
        return (
            "acknowledged no order, so there was nothing to lose".to_string(),
            true,
        );
    }
    let mut out = if v.lost == 0 {
        format!("lost none of its {} orders", v.orders)
    } else {
        let mut s = format!("lost {} of {} orders", v.lost, v.orders);
        // Name the cause when every lost order was held by a waiter that a fault took
        // down: that is the measured link, not a guess.
        let downed: Vec<&str> = a
            .faults
            .iter()
            .filter(|f| f.record.applied && matches!(f.record.kind.as_str(), "kill" | "restart"))
            .filter_map(|f| f.record.waiter.as_deref())
            .collect();
        if !downed.is_empty()
            && v.lost_by_waiter
                .keys()
                .all(|w| downed.contains(&w.as_str()))
        {
            let who: Vec<&str> = v.lost_by_waiter.keys().map(String::as_str).collect();
            let verb = if a.faults.iter().any(|f| f.record.kind == "restart") {
                "restarted"
            } else {
                "died"
            };
            s.push_str(&format!(" when {} {verb}", who.join(" and ")));
        }
        s
    };
    if v.diverged > 0 {
        let joint = if v.lost == 0 { ", but" } else { "," };
        out.push_str(&format!("{joint} {} diverged", v.diverged));
    }
    if v.duplicated > 0 {
        out.push_str(&format!(", {} duplicated", v.duplicated));
    }
    if v.unchecked > 0 {
        out.push_str(&format!(" ({} could not be checked)", v.unchecked));
    }
    (out, v.lost == 0 && v.diverged == 0 && v.duplicated == 0)
}

fn recovery(a: &ArchReport) -> String {
    let errors = format!("{} errors ({}) in all", a.errors, pct(a.error_rate));
    let parts: Vec<String> = a
        .faults
        .iter()
        .map(|f| {
            let what = &f.record.description;
            match f.recovery {
                None => format!("{what} could not be applied"),
                Some(r) if !r.impacted => format!("errors stayed under 1% after {what}"),
                Some(r) => match r.recovery_s {
                    Some(s) => format!("recovered {s:.1} s after {what}"),
                    None => format!("had not recovered from {what} by the end of the run"),
                },
            }
        })
        .collect();
    if parts.is_empty() {
        errors
    } else {
        format!("{}, {errors}", parts.join("; "))
    }
}

/// One line per architecture of a sweep: what the distance cost it, from the nearest
/// point to the farthest, and what it lost over all its runs. E.g. `stateless-redis:
/// p50 0.62 ms at 0 ms, 4.8 ms at 2 ms (+4.2 ms); throughput 640.1 to 512.3 req/s
/// (-20%); lost none of its 1650 orders`.
pub fn sweep_verdicts(sweep: &SweepReport) -> Vec<String> {
    sweep
        .lines
        .iter()
        .map(|line| {
            let (Some(near), Some(far)) = (line.points.first(), line.points.last()) else {
                return format!("{}: no run", line.architecture);
            };
            let mut parts = Vec::new();
            match (near.p50_ms, far.p50_ms) {
                (Some(a), Some(b)) if line.points.len() > 1 => parts.push(format!(
                    "p50 {} ms at {} ms, {} ms at {} ms ({:+.2} ms)",
                    ms(a),
                    near.rtt_ms,
                    ms(b),
                    far.rtt_ms,
                    b - a
                )),
                (Some(a), _) => parts.push(format!("p50 {} ms", ms(a))),
                _ => parts.push("no answered request".to_string()),
            }
            if line.points.len() > 1 && near.throughput_rps > 0.0 {
                let change = far.throughput_rps / near.throughput_rps - 1.0;
                parts.push(format!(
                    "throughput {:.1} to {:.1} req/s ({:+.0}%)",
                    near.throughput_rps,
                    far.throughput_rps,
                    change * 100.0
                ));
            }
            let orders: u32 = line.points.iter().map(|p| p.orders).sum();
            let lost: u32 = line.points.iter().map(|p| p.lost).sum();
            let diverged: u32 = line.points.iter().map(|p| p.diverged).sum();
            let mut kept = if lost == 0 {
                format!("lost none of its {orders} orders")
            } else {
                format!("lost {lost} of {orders} orders")
            };
            if diverged > 0 {
                kept.push_str(&format!(", {diverged} diverged or duplicated"));
            }
            parts.push(kept);
            let tail = if line.affected {
                ""
            } else {
                " (the swept links do not reach it: its spread is run-to-run noise)"
            };
            format!("{}: {}{tail}", line.architecture, parts.join("; "))
        })
        .collect()
}
