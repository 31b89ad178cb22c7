//! The terminal table: one row per figure, one column per architecture, so the
//! architectures read side by side.

use super::{ArchReport, Report, SweepLine, SweepPoint, SweepReport};

/// A number of milliseconds with sensible precision.
pub(super) fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A share as a percentage.
pub(super) fn pct(v: f64) -> String {
    if v == 0.0 {
        "0%".into()
    } else if v < 0.001 {
        "<0.1%".into()
    } else {
        format!("{:.1}%", v * 100.0)
    }
}

/// The recovery cell of an architecture for the fault described as `fault`.
pub(super) fn recovery_cell(a: &ArchReport, fault: &str) -> String {
    let Some(f) = a.faults.iter().find(|f| f.record.description == fault) else {
        return "not applicable".into();
    };
    match f.recovery {
        None => "not applied".into(),
        Some(r) if !r.impacted => "no impact".into(),
        Some(r) => match r.recovery_s {
            Some(s) => format!("{s:.1} s"),
            None => "not recovered".into(),
        },
    }
}

/// The rows: a label and a cell per architecture.
pub(super) fn rows(report: &Report) -> Vec<(String, Vec<String>)> {
    let archs = &report.architectures;
    let row = |label: &str, f: &dyn Fn(&ArchReport) -> String| {
        (label.to_string(), archs.iter().map(f).collect())
    };
    let mut rows = vec![
        row("architecture", &|a| a.label.clone()),
        row("throughput (req/s)", &|a| {
            format!("{:.1}", a.throughput_rps)
        }),
        row("peak second (req/s)", &|a| a.peak_rps.to_string()),
        row("p50 / p99 (ms)", &|a| match a.latency {
            Some(l) => format!("{} / {}", ms(l.p50_ms), ms(l.p99_ms)),
            None => "no answers".into(),
        }),
        row("p99.9 / max (ms)", &|a| match a.latency {
            Some(l) => format!("{} / {}", ms(l.p999_ms), ms(l.max_ms)),
            None => "no answers".into(),
        }),
        row("errors", &|a| {
            format!("{} of {} ({})", a.errors, a.requests, pct(a.error_rate))
        }),
        row("orders paid", &|a| a.orders_paid.to_string()),
        row("orders lost", &|a| {
            format!("{} of {}", a.verification.lost, a.verification.orders)
        }),
        row("diverged / duplicated", &|a| {
            format!(
                "{} / {}",
                a.verification.diverged, a.verification.duplicated
            )
        }),
    ];
    // One recovery row per fault, in the order they were planned.
    let mut planned: Vec<(f64, &str)> = archs
        .iter()
        .flat_map(|a| &a.faults)
        .map(|f| (f.record.planned_s, f.record.description.as_str()))
        .collect();
    planned.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut faults: Vec<&str> = Vec::new();
    for (_, f) in planned {
        if !faults.contains(&f) {
            faults.push(f);
        }
    }
    for fault in faults {
        rows.push(row(&format!("recovery ({fault})"), &|a| {
            recovery_cell(a, fault)
        }));
    }
    rows
}

/// Renders the table with aligned columns.
pub fn render(report: &Report) -> String {
    let mut rows = rows(report);
    rows.insert(
        0,
        (
            String::new(),
            report
                .architectures
                .iter()
                .map(|a| a.name.clone())
                .collect(),
        ),
    );
    let label_w = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let col_w: Vec<usize> = (0..report.architectures.len())
        .map(|i| {
            rows.iter()
                .map(|(_, cells)| cells[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, (label, cells)) in rows.iter().enumerate() {
        let mut line = format!("{label:<label_w$}");
        for (cell, w) in cells.iter().zip(&col_w) {
            line.push_str("   ");
            line.push_str(&format!("{cell:<w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 {
            let width = label_w + col_w.iter().map(|w| w + 3).sum::<usize>();
            out.push_str(&"-".repeat(width));
            out.push('\n');
        }
    }
    out
}

/// A distance as a column heading: `0 ms`, `0.5 ms`.
pub(super) fn rtt(v: f64) -> String {
    format!("{v} ms")
}

/// A labelled row of cells.
pub(super) type Row = (String, Vec<String>);

/// One cell per distance of the sweep (`-` where the line has no point).
pub(super) fn sweep_cells(
    sweep: &SweepReport,
    line: &SweepLine,
    f: &dyn Fn(&SweepPoint) -> String,
) -> Vec<String> {
    sweep
        .rtt_ms
        .iter()
        .map(|&rtt| {
            line.points
                .iter()
                .find(|p| p.rtt_ms == rtt)
                .map_or_else(|| "-".to_string(), f)
        })
        .collect()
}

/// The sweep's blocks: a heading, then one row per architecture with a cell per
/// distance.
pub(super) fn sweep_blocks(sweep: &SweepReport) -> Vec<(&'static str, Vec<Row>)> {
    let block = |f: &dyn Fn(&SweepPoint) -> String| {
        sweep
            .lines
            .iter()
            .map(|l| {
                let name = if l.affected {
                    l.architecture.clone()
                } else {
                    format!("{} (not on the link)", l.architecture)
                };
                (name, sweep_cells(sweep, l, f))
            })
            .collect::<Vec<_>>()
    };
    vec![
        (
            "throughput (req/s)",
            block(&|p| format!("{:.1}", p.throughput_rps)),
        ),
        (
            "p50 (ms)",
            block(&|p| p.p50_ms.map(ms).unwrap_or_else(|| "-".into())),
        ),
        (
            "p99 (ms)",
            block(&|p| p.p99_ms.map(ms).unwrap_or_else(|| "-".into())),
        ),
        (
            "round trip added, measured (ms)",
            block(&|p| {
                p.added_rtt_ms
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into())
            }),
        ),
        (
            "errors",
            block(&|p| format!("{} of {}", p.errors, p.requests)),
        ),
        (
            "orders lost / diverged",
            block(&|p| format!("{} / {} of {}", p.lost, p.diverged, p.orders)),
        ),
    ]
}

/// Renders a sweep: for each figure, one row per architecture, one column per
/// distance, so a line reads as the cost of distance to that architecture.
pub fn render_sweep(sweep: &SweepReport) -> String {
    let blocks = sweep_blocks(sweep);
    let heads: Vec<String> = sweep.rtt_ms.iter().map(|&v| rtt(v)).collect();
    let label_w = blocks
        .iter()
        .flat_map(|(h, rows)| {
            std::iter::once(h.chars().count())
                .chain(rows.iter().map(|(l, _)| l.chars().count() + 2))
        })
        .max()
        .unwrap_or(0);
    let col_w: Vec<usize> = (0..heads.len())
        .map(|i| {
            blocks
                .iter()
                .flat_map(|(_, rows)| {
                    rows.iter()
                        .map(move |(_, c)| c.get(i).map_or(0, |c| c.chars().count()))
                })
                .chain(std::iter::once(heads[i].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |label: &str, cells: &[String]| {
        let mut l = format!("{label:<label_w$}");
        for (cell, w) in cells.iter().zip(&col_w) {
            l.push_str("   ");
            l.push_str(&format!("{cell:>w$}"));
        }
        format!("{}\n", l.trim_end())
    };
    let mut out = format!("round trip: {}\n", sweep.describe);
    out.push_str(&line("", &heads));
    let width = label_w + col_w.iter().map(|w| w + 3).sum::<usize>();
    out.push_str(&"-".repeat(width));
    out.push('\n');
    for (heading, rows) in &blocks {
        out.push_str(&format!("{heading}\n"));
        for (label, cells) in rows {
            out.push_str(&line(&format!("  {label}"), cells));
        }
    }
    out
}
