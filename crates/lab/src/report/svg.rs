//! Hand-written SVG charts: no plotting crate, no script, no external reference, so each
//! chart works inline in `index.html`, as a file on its own, and committed under docs/.
//!
//! - **Timeline** (one per architecture): answers and failures per second, the offered
//!   arrival rate for an open loop (on its own right-hand axis: diners, not requests),
//!   and each fault as a vertical line (a shaded band while it lasts). All timelines
//!   share one y scale so they compare at a glance.
//! - **Latency**: p50, p90, p99, p99.9 and max as grouped bars, one colour per
//!   architecture, on a logarithmic scale (the tail is often 100x the median).
//! - **Distance** (a sweep only): throughput and p50 against the round trip, one line
//!   per architecture: what distance costs each one.

use super::{ArchReport, Report, SweepPoint, SweepReport};

/// Appends a formatted line to the SVG text.
macro_rules! put {
    ($s:expr, $($fmt:tt)*) => {{
        $s.push_str(&format!($($fmt)*));
        $s.push('\n');
    }};
}

/// One rendered chart and the file it goes to.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File name, e.g. `timeline-stateful.svg`.
    pub file: String,
    /// Title.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

const W: f64 = 760.0;
const H: f64 = 280.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 48.0;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
];
const OK_COLOUR: &str = "#1f77b4";
const ERR_COLOUR: &str = "#d62728";

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A round number at or above `v` (1, 2 or 5 times a power of ten).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

/// A y axis for values up to `max`: a round tick step and the top (a whole number of
/// steps, about four of them).
fn axis(max: f64) -> (f64, f64) {
    let step = nice_ceiling(max.max(1.0) / 4.0).max(1.0);
    (step * (max / step).ceil().max(1.0), step)
}

fn open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\" aria-label=\"{t}\">\n<title>{t}</title>\n<rect width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\n<text x=\"{LEFT}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{t}</text>\n",
        t = esc(title)
    )
}

/// Every chart of a report.
pub fn charts(report: &Report) -> Vec<Chart> {
    let archs = &report.architectures;
    let peak = archs
        .iter()
        .flat_map(|a| a.seconds.iter().map(|s| s.ok.max(s.errors)))
        .max()
        .unwrap_or(0);
    let offered_peak = archs
        .iter()
        .flat_map(|a| a.offered_per_second.iter().copied())
        .max();
    let y_axis = axis(peak as f64);
    let mut out: Vec<Chart> = archs
        .iter()
        .map(|a| {
            let title = format!("{}: answers and errors per second", a.name);
            let svg = timeline(a, &title, y_axis, offered_peak.map(|p| p as f64));
            Chart {
                file: format!("timeline-{}.svg", a.name),
                svg,
                title,
            }
        })
        .collect();
    if let Some(sweep) = &report.sweep {
        // Instead of the latency bars, which would hold one group per run and
        // distance: the chart a sweep is about, first.
        let title = format!("What distance costs (round trip: {})", sweep.describe);
        out.insert(
            0,
            Chart {
                file: "distance.svg".into(),
                svg: distance(sweep, &title),
                title,
            },
        );
    } else {
        let title = "Latency of answered requests (ms, log scale)".to_string();
        out.push(Chart {
            file: "latency.svg".into(),
            svg: latency(archs, &title),
            title,
        });
    }
    out
}

/// Answers and errors per second with the faults marked, on the y axis `(top, tick
/// step)`. For an open loop, the new diners per second (offered) are drawn dashed on a
/// right-hand axis of their own, up to `offered_peak`: they are diners, not requests.
pub fn timeline(
    a: &ArchReport,
    title: &str,
    (y_max, step): (f64, f64),
    offered_peak: Option<f64>,
) -> String {
    let mut s = open(title);
    // The seconds of the load only: after it, only stragglers complete, and their dip
    // would read as an outage.
    let shown = &a.seconds[..a.seconds.len().min(a.duration_s.ceil() as usize)];
    let n = shown.len().max(1) as f64;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: f64| LEFT + pw * (t / n);
    let y = |v: f64, top: f64| TOP + ph * (1.0 - v / top);
    let ticks = (y_max / step).round().max(1.0) as u32;
    // The right axis shares the grid lines: a round step times the same tick count.
    let offered = offered_peak
        .filter(|_| !a.offered_per_second.is_empty())
        .map(|peak| {
            let step = nice_ceiling(peak.max(1.0) / f64::from(ticks));
            (step * f64::from(ticks), step)
        });
    for i in 0..=ticks {
        let v = step * f64::from(i);
        let gy = y(v, y_max);
        put!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\" stroke=\"#e5e5e5\"/>",
            W - RIGHT
        );
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            gy + 4.0,
            v.round()
        );
        if let Some((_, off_step)) = offered {
            let label = (off_step * f64::from(i)).round();
            put!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#777\">{label}</text>",
                W - RIGHT + 6.0,
                gy + 4.0
            );
        }
    }
    let every = (n / 10.0).ceil().max(1.0) as usize;
    for t in (0..=n as usize).step_by(every) {
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text>",
            x(t as f64),
            H - BOTTOM + 16.0
        );
    }
    put!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the load started</text>",
        LEFT + pw / 2.0,
        H - 8.0
    );
    put!(
        s,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">requests per second</text>",
        TOP + ph / 2.0
    );
    if offered.is_some() {
        put!(
            s,
            "<text transform=\"translate({:.1} {:.1}) rotate(90)\" text-anchor=\"middle\" fill=\"#777\">new diners per second</text>",
            W - 8.0,
            TOP + ph / 2.0
        );
    }
    // Faults: a band while they last, a line where they start.
    for f in a.faults.iter().filter(|f| f.record.applied) {
        let x0 = x(f.record.at_s);
        if let Some(end) = f.record.end_s
            && end > f.record.at_s
        {
            put!(
                s,
                "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{ph}\" fill=\"#fdd\" opacity=\"0.6\"/>",
                x(end) - x0
            );
        }
        put!(
            s,
            "<line x1=\"{x0:.1}\" y1=\"{TOP}\" x2=\"{x0:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>",
            TOP + ph
        );
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{}</text>",
            x0 + 4.0,
            TOP + 12.0,
            esc(&f.record.description)
        );
    }
    let line = |values: Vec<f64>, top: f64, colour: &str, dash: &str| {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y(v, top)))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
            points.join(" ")
        )
    };
    if let Some((off_max, _)) = offered {
        let values = a
            .offered_per_second
            .iter()
            .take(shown.len())
            .map(|&v| v as f64)
            .collect();
        s.push_str(&line(values, off_max, "#999", " stroke-dasharray=\"5 4\""));
    }
    s.push_str(&line(
        shown.iter().map(|b| b.ok as f64).collect(),
        y_max,
        OK_COLOUR,
        "",
    ));
    s.push_str(&line(
        shown.iter().map(|b| b.errors as f64).collect(),
        y_max,
        ERR_COLOUR,
        "",
    ));
    let mut legend = vec![(OK_COLOUR, "answers (2xx)"), (ERR_COLOUR, "errors")];
    if offered.is_some() {
        legend.push(("#999", "new diners (offered, right axis)"));
    }
    for (i, (colour, label)) in legend.iter().enumerate() {
        let lx = W - RIGHT - 190.0;
        let ly = 12.0 + 11.0 * i as f64;
        put!(
            s,
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/>",
            ly - 3.0
        );
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            lx + 14.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Grouped bars of latency percentiles, one colour per architecture, log scale.
pub fn latency(archs: &[ArchReport], title: &str) -> String {
    let mut s = open(title);
    let groups = ["p50", "p90", "p99", "p99.9", "max"];
    let values: Vec<Option<[f64; 5]>> = archs
        .iter()
        .map(|a| {
            a.latency
                .map(|l| [l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms])
        })
        .collect();
    let all: Vec<f64> = values
        .iter()
        .flatten()
        .flat_map(|v| v.iter().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    if all.is_empty() {
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no answered requests</text>",
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
        s.push_str("</svg>\n");
        return s;
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min).log10().floor();
    let hi = all
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y = |v: f64| TOP + ph * (1.0 - (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo));
    for e in lo as i32..=hi as i32 {
        let v = 10f64.powi(e);
        let label = if v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        };
        put!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#e5e5e5\"/>",
            y(v),
            W - RIGHT
        );
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    let group_w = pw / groups.len() as f64;
    let bar_w = (group_w * 0.8) / archs.len().max(1) as f64;
    for (g, name) in groups.iter().enumerate() {
        let gx = LEFT + group_w * g as f64 + group_w * 0.1;
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
            gx + group_w * 0.4,
            H - BOTTOM + 16.0
        );
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let (bx, by) = (gx + bar_w * i as f64, y(v[g]));
            let colour = PALETTE[i % PALETTE.len()];
            put!(
                s,
                "<rect x=\"{bx:.1}\" y=\"{by:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} {name}: {} ms</title></rect>",
                bar_w - 2.0,
                TOP + ph - by,
                esc(&archs[i].name),
                super::table::ms(v[g])
            );
            put!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>",
                bx + bar_w / 2.0 - 1.0,
                by - 3.0,
                super::table::ms(v[g])
            );
        }
    }
    for (i, a) in archs.iter().enumerate() {
        let lx = LEFT + 8.0 + 150.0 * i as f64;
        let ly = H - 10.0;
        put!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>",
            ly - 9.0,
            PALETTE[i % PALETTE.len()]
        );
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            lx + 14.0,
            esc(&a.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The distance chart of a sweep: throughput (left) and median latency (right) against
/// the round trip, one line per architecture in the latency chart's colours. A line
/// the swept links do not reach is dashed: it shows the run-to-run spread.
pub fn distance(sweep: &SweepReport, title: &str) -> String {
    const DH: f64 = 340.0;
    const GAP: f64 = 70.0;
    // Below the title, with room for the panels' own headings.
    const TOP: f64 = 56.0;
    let mut s = open(title).replace(
        &format!("viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\""),
        &format!("viewBox=\"0 0 {W} {DH}\" width=\"{W}\" height=\"{DH}\""),
    );
    s = s.replace(
        &format!("<rect width=\"{W}\" height=\"{H}\""),
        &format!("<rect width=\"{W}\" height=\"{DH}\""),
    );
    let legend_rows = sweep.lines.len().div_ceil(2) as f64;
    let bottom = 58.0 + 14.0 * legend_rows;
    let ph = DH - TOP - bottom;
    let pw = (W - LEFT - RIGHT - GAP) / 2.0;
    let x_max = sweep.rtt_ms.iter().copied().fold(0.0, f64::max).max(0.1);
    let panels: [(&str, &PointValue); 2] = [
        ("throughput (req/s)", &|p| Some(p.throughput_rps)),
        ("p50 latency (ms)", &|p| p.p50_ms),
    ];
    for (n, (label, value)) in panels.iter().enumerate() {
        let left = LEFT + n as f64 * (pw + GAP);
        let top_value = sweep
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(value))
            .fold(0.0, f64::max);
        let (y_max, step) = fine_axis(top_value);
        let x = |v: f64| left + pw * (v / x_max);
        let y = |v: f64| TOP + ph * (1.0 - v / y_max);
        let ticks = (y_max / step).round().max(1.0) as u32;
        for i in 0..=ticks {
            let v = step * f64::from(i);
            put!(
                s,
                "<line x1=\"{left:.1}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#e5e5e5\"/>",
                y(v),
                left + pw
            );
            put!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left - 6.0,
                y(v) + 4.0,
                tick_label(v, step)
            );
        }
        for &rtt in &sweep.rtt_ms {
            put!(
                s,
                "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#f0f0f0\"/>",
                x(rtt),
                TOP + ph
            );
            put!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{rtt}</text>",
                x(rtt),
                TOP + ph + 16.0
            );
        }
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">round trip (ms)</text>",
            left + pw / 2.0,
            TOP + ph + 32.0
        );
        put!(
            s,
            "<text x=\"{left:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            TOP - 10.0,
            esc(label)
        );
        for (i, line) in sweep.lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .filter_map(|p| Some((x(p.rtt_ms), y(value(p)?))))
                .collect();
            let dash = if line.affected {
                ""
            } else {
                " stroke-dasharray=\"5 4\""
            };
            let path: Vec<String> = points
                .iter()
                .map(|(px, py)| format!("{px:.1},{py:.1}"))
                .collect();
            put!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                path.join(" ")
            );
            for (p, (px, py)) in line.points.iter().zip(&points) {
                let shown = value(p)
                    .map(|v| tick_label(v, step / 10.0))
                    .unwrap_or_default();
                put!(
                    s,
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{colour}\"><title>{} at {} ms: {shown}</title></circle>",
                    esc(&line.architecture),
                    p.rtt_ms
                );
            }
        }
    }
    for (i, line) in sweep.lines.iter().enumerate() {
        let lx = LEFT + 340.0 * (i % 2) as f64;
        let ly = DH - bottom + 52.0 + 14.0 * (i / 2) as f64;
        let colour = PALETTE[i % PALETTE.len()];
        let note = if line.affected {
            ""
        } else {
            " (not on the swept link)"
        };
        put!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"14\" height=\"3\" fill=\"{colour}\"/>",
            ly - 4.0
        );
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{ly:.1}\">{}{note}</text>",
            lx + 18.0,
            esc(&format!("{}: {}", line.architecture, line.label))
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One figure of a sweep point.
type PointValue = dyn Fn(&SweepPoint) -> Option<f64>;

/// A linear axis from 0 with about four round steps, fine enough for values below 1
/// (the integer [`axis`] would make 0.4 ms a flat line).
fn fine_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 0.25);
    }
    let step = nice_ceiling(max / 4.0);
    (step * (max / step).ceil().max(1.0), step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}
