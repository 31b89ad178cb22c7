//! `index.html`: the report as one self-contained page.
//!
//! Inline CSS, inline SVG, no script and no external URL, so the page can be opened from
//! disk, mailed, or attached to an issue and look the same. Every number on it comes
//! from the [`Report`]; the page only arranges them.

use super::svg::{Chart, esc};
use super::table::{ms, pct, rows, rtt, sweep_blocks};
use super::{ArchReport, Report, SweepReport};
use crate::verify::Verdict;

/// Non-intact orders listed per architecture (the rest are in `report.json`).
const LIST_ORDERS: usize = 20;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}\
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.verdicts li{margin:.4em 0;font-size:1.05em}.meta{color:#555}figure{margin:1em 0}svg{max-width:100%;height:auto}\
code{background:#f4f4f4;padding:0 3px}";

/// Appends a formatted line.
macro_rules! put {
    ($s:expr, $($fmt:tt)*) => {{
        $s.push_str(&format!($($fmt)*));
        $s.push('\n');
    }};
}

/// The whole page.
pub fn render(report: &Report, charts: &[Chart]) -> String {
    let sc = &report.scenario;
    let mut h = String::new();
    put!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
    );
    put!(
        h,
        "<title>bistro lab: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        esc(&sc.name)
    );
    put!(h, "<h1>bistro lab: {}</h1>", esc(&sc.name));
    if !sc.description.is_empty() {
        put!(h, "<p>{}</p>", esc(&sc.description));
    }
    put!(
        h,
        "<p class=\"meta\">{}; {} s of load per architecture; {} waiters behind the balancer; think time {}-{} ms; seed {}. Architectures ran one after the other, each on the whole machine.</p>",
        esc(&sc.load),
        sc.duration_s,
        sc.waiters,
        sc.think_ms[0],
        sc.think_ms[1],
        sc.seed
    );
    if !sc.faults.is_empty() {
        put!(
            h,
            "<p class=\"meta\">Faults: {}.</p>",
            esc(&sc.faults.join("; "))
        );
    }
    if !sc.network.is_empty() {
        put!(
            h,
            "<p class=\"meta\">Network (a delay proxy on each link): {}.</p>",
            esc(&sc.network.join("; "))
        );
    }

    put!(h, "<h2>Verdict</h2>\n<ul class=\"verdicts\">");
    for v in report.verdicts() {
        put!(h, "<li>{}</li>", esc(&v));
    }
    put!(h, "</ul>");
    let notes: Vec<(&str, &String)> = report
        .architectures
        .iter()
        .flat_map(|a| a.notes.iter().map(|n| (a.name.as_str(), n)))
        .collect();
    if !notes.is_empty() {
        put!(h, "<h2>Notes</h2>\n<ul>");
        for (arch, n) in notes {
            put!(h, "<li><b>{}</b>: <pre>{}</pre></li>", esc(arch), esc(n));
        }
        put!(h, "</ul>");
    }

    if let Some(sweep) = &report.sweep {
        distance(&mut h, sweep, charts);
    }

    put!(h, "<h2>Side by side</h2>\n<table>\n<tr><th></th>");
    for a in &report.architectures {
        put!(h, "<th>{}</th>", esc(&a.name));
    }
    put!(h, "</tr>");
    for (label, cells) in rows(report) {
        let cells: String = cells
            .iter()
            .map(|c| format!("<td>{}</td>", esc(c)))
            .collect();
        put!(h, "<tr><th>{}</th>{cells}</tr>", esc(&label));
    }
    put!(h, "</table>");

    put!(h, "<h2>Charts</h2>");
    // The distance chart is shown with its table above.
    for c in charts.iter().filter(|c| c.file != DISTANCE_SVG) {
        put!(
            h,
            "<figure>\n{}<figcaption>{} (<code>{}</code>)</figcaption>\n</figure>",
            c.svg,
            esc(&c.title),
            esc(&c.file)
        );
    }

    faults(&mut h, report);
    errors(&mut h, report);
    steps(&mut h, report);
    verification(&mut h, report);
    generator(&mut h, report);
    links(&mut h, report);

    put!(h, "<h2>Files</h2>\n<ul>");
    for f in &report.files {
        put!(h, "<li><code>{}</code></li>", esc(f));
    }
    put!(h, "</ul>\n</body>\n</html>");
    h
}

/// The sweep's chart, drawn in its own section.
const DISTANCE_SVG: &str = "distance.svg";

/// The sweep: its chart, then one table per figure, a row per architecture and a
/// column per distance.
fn distance(h: &mut String, sweep: &SweepReport, charts: &[Chart]) {
    put!(h, "<h2>What distance costs</h2>");
    put!(
        h,
        "<p class=\"meta\">Every architecture ran once per round trip, put on these links by a delay proxy the lab starts in front of each target: {}. At 0 ms the traffic still goes through the proxy, so every point pays the same extra hop and differs only by the distance. An architecture the links do not reach is drawn dashed: its spread is the run-to-run noise.</p>",
        esc(&sweep.describe)
    );
    if let Some(c) = charts.iter().find(|c| c.file == DISTANCE_SVG) {
        put!(
            h,
            "<figure>\n{}<figcaption>{} (<code>{}</code>)</figcaption>\n</figure>",
            c.svg,
            esc(&c.title),
            esc(&c.file)
        );
    }
    for (heading, rows) in sweep_blocks(sweep) {
        put!(h, "<h3>{}</h3>\n<table>\n<tr><th></th>", esc(heading));
        for &v in &sweep.rtt_ms {
            put!(h, "<th>{}</th>", esc(&rtt(v)));
        }
        put!(h, "</tr>");
        for (label, cells) in rows {
            let cells: String = cells
                .iter()
                .map(|c| format!("<td class=\"n\">{}</td>", esc(c)))
                .collect();
            put!(h, "<tr><th>{}</th>{cells}</tr>", esc(&label));
        }
        put!(h, "</table>");
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(ms).unwrap_or_else(|| "-".into())
}

fn faults(h: &mut String, report: &Report) {
    if report.architectures.iter().all(|a| a.faults.is_empty()) {
        return;
    }
    put!(h, "<h2>Before, during and after each fault</h2>");
    put!(
        h,
        "<p class=\"meta\">\"During\" lasts from the fault until it ended and the service recovered (the first 100 ms step after its end that, with the second it starts, has requests answered and under 1% errors), and at least one second.</p>"
    );
    for a in &report.architectures {
        for f in &a.faults {
            let r = &f.record;
            let when = match r.end_s {
                Some(end) => format!("{:.1} s to {end:.1} s", r.at_s),
                None => format!("at {:.1} s", r.at_s),
            };
            let note = if r.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.note)
            };
            put!(
                h,
                "<h3>{}: {} {when}{}</h3>",
                esc(&a.name),
                esc(&r.description),
                esc(&note)
            );
            let (Some(p), Some(rec)) = (f.phases, f.recovery) else {
                put!(h, "<p>Not applied.</p>");
                continue;
            };
            let recovery = match (rec.impacted, rec.recovery_s) {
                (false, _) => "errors stayed under 1% in every second".to_string(),
                (true, Some(s)) => format!("recovered after {s:.1} s"),
                (true, None) => "not recovered by the end of the run".to_string(),
            };
            put!(h, "<p>{}</p>", esc(&recovery));
            put!(
                h,
                "<table>\n<tr><th>phase</th><th>seconds</th><th>answers/s</th><th>error rate</th><th>p50 ms</th><th>p99 ms</th></tr>"
            );
            for (name, ph) in [
                ("before", p.before),
                ("during", p.during),
                ("after", p.after),
            ] {
                put!(
                    h,
                    "<tr><th>{name}</th><td class=\"n\">{:.1}-{:.1}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    ph.from_s,
                    ph.to_s,
                    ph.throughput_rps
                        .map(|t| format!("{t:.1}"))
                        .unwrap_or_else(|| "-".into()),
                    ph.error_rate.map(pct).unwrap_or_else(|| "-".into()),
                    opt_ms(ph.latency.map(|l| l.p50_ms)),
                    opt_ms(ph.latency.map(|l| l.p99_ms)),
                );
            }
            put!(h, "</table>");
        }
    }
}

fn by_arch_table(
    h: &mut String,
    report: &Report,
    keys: &[String],
    cell: &dyn Fn(&ArchReport, &str) -> String,
) {
    put!(h, "<table>\n<tr><th></th>");
    for a in &report.architectures {
        put!(h, "<th>{}</th>", esc(&a.name));
    }
    put!(h, "</tr>");
    for k in keys {
        let cells: String = report
            .architectures
            .iter()
            .map(|a| format!("<td class=\"n\">{}</td>", esc(&cell(a, k))))
            .collect();
        put!(h, "<tr><th>{}</th>{cells}</tr>", esc(k));
    }
    put!(h, "</table>");
}

fn errors(h: &mut String, report: &Report) {
    let mut kinds: Vec<String> = report
        .architectures
        .iter()
        .flat_map(|a| a.errors_by_kind.keys().cloned())
        .collect();
    kinds.sort();
    kinds.dedup();
    put!(h, "<h2>Errors the diners saw</h2>");
    if kinds.is_empty() {
        put!(h, "<p>None.</p>");
        return;
    }
    by_arch_table(h, report, &kinds, &|a, k| {
        a.errors_by_kind.get(k).copied().unwrap_or(0).to_string()
    });
    let mut details: Vec<String> = report
        .architectures
        .iter()
        .flat_map(|a| a.failures.keys().cloned())
        .collect();
    details.sort();
    details.dedup();
    put!(h, "<h3>By step and answer</h3>");
    by_arch_table(h, report, &details, &|a, k| {
        a.failures.get(k).copied().unwrap_or(0).to_string()
    });
}

fn steps(h: &mut String, report: &Report) {
    let mut names: Vec<String> = report
        .architectures
        .iter()
        .flat_map(|a| a.latency_by_step.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    put!(h, "<h2>Latency per step (p50 / p99 ms)</h2>");
    by_arch_table(h, report, &names, &|a, k| match a.latency_by_step.get(k) {
        Some(l) => format!("{} / {} ({} answers)", ms(l.p50_ms), ms(l.p99_ms), l.count),
        None => "-".into(),
    });
}

fn verification(h: &mut String, report: &Report) {
    put!(h, "<h2>Verification</h2>");
    put!(
        h,
        "<p class=\"meta\">At the end every diner read back each order the servers had acknowledged and compared it with its own record of the last acknowledged state.</p>"
    );
    let keys: Vec<String> = [
        "orders",
        "intact",
        "lost",
        "diverged",
        "duplicated",
        "unchecked",
        "sessions gone",
    ]
    .map(String::from)
    .to_vec();
    by_arch_table(h, report, &keys, &|a, k| {
        let v = &a.verification;
        match k {
            "orders" => v.orders,
            "intact" => v.intact,
            "lost" => v.lost,
            "diverged" => v.diverged,
            "duplicated" => v.duplicated,
            "unchecked" => v.unchecked,
            _ => v.sessions_gone,
        }
        .to_string()
    });
    for a in &report.architectures {
        let bad: Vec<_> = a
            .verification
            .checks
            .iter()
            .filter(|c| c.verdict != Verdict::Intact)
            .collect();
        if bad.is_empty() {
            continue;
        }
        put!(
            h,
            "<h3>{}: orders not intact ({} in all, first {} shown)</h3>\n<table>",
            esc(&a.name),
            bad.len(),
            bad.len().min(LIST_ORDERS)
        );
        put!(
            h,
            "<tr><th>order</th><th>diner</th><th>waiter</th><th>verdict</th><th>why</th></tr>"
        );
        for c in bad.iter().take(LIST_ORDERS) {
            put!(
                h,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td><td>{:?}</td><td>{}</td></tr>",
                esc(&c.order),
                c.diner,
                esc(c.waiter.as_deref().unwrap_or("?")),
                c.verdict,
                esc(&c.detail)
            );
        }
        put!(h, "</table>");
    }
}

fn generator(h: &mut String, report: &Report) {
    put!(h, "<h2>The load generator</h2>");
    put!(
        h,
        "<p class=\"meta\">Latency counts from when a request left, and for an open-loop arrival's first request from its scheduled arrival, so a stall cannot hide. The send lag is how late requests left compared with when the diners meant to send them: if it is large, the generator itself was a bottleneck.</p>"
    );
    let keys: Vec<String> = [
        "diners",
        "send lag p99 (ms)",
        "send lag max (ms)",
        "arrivals shed",
    ]
    .map(String::from)
    .to_vec();
    by_arch_table(h, report, &keys, &|a, k| {
        let g = &a.generator;
        match k {
            "diners" => g.diners.to_string(),
            "send lag p99 (ms)" => ms(g.send_lag_p99_ms),
            "send lag max (ms)" => ms(g.send_lag_max_ms),
            _ => g.shed.to_string(),
        }
    });
}

fn links(h: &mut String, report: &Report) {
    if report.architectures.iter().all(|a| a.network.is_empty()) {
        return;
    }
    put!(h, "<h2>The delay proxies</h2>");
    put!(
        h,
        "<p class=\"meta\">One proxy in front of each target of a link (the store; each waiter for the balancer; each replicated waiter for its peers). \"Held\" is the mean time a chunk waited in a proxy, one way: half the configured round trip plus the timer's overshoot, so the distance actually added.</p>"
    );
    put!(
        h,
        "<table>\n<tr><th>run</th><th>link</th><th>round trip (ms)</th><th>held, one way (ms)</th><th>proxies</th><th>connections</th><th>refused</th><th>bytes to / from the target</th></tr>"
    );
    for a in &report.architectures {
        for l in &a.network {
            put!(
                h,
                "<tr><th>{}</th><td>{}</td><td class=\"n\">{}{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td></tr>",
                esc(&a.name),
                esc(&l.link),
                l.rtt_ms,
                if l.jitter_ms > 0.0 {
                    format!(" ± {}", l.jitter_ms)
                } else {
                    String::new()
                },
                l.mean_held_ms
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "-".into()),
                l.proxies,
                l.connections,
                l.refused,
                l.bytes_to_target,
                l.bytes_from_target
            );
        }
    }
    put!(h, "</table>");
}
