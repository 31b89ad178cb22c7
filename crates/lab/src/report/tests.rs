use super::*;
use crate::ledger::{Contents, Ledger, OrderSnapshot};
use crate::sample::ErrorKind;
use crate::scenario::{Mode, StoreSpec};
use crate::verify::{self, Listing, Observation, ReadBack, Verdict};
use std::collections::BTreeMap;

fn sample(at_ms: u64, latency_ms: u64, error: Option<ErrorKind>) -> Sample {
    Sample {
        at_us: at_ms * 1000,
        latency_us: latency_ms * 1000,
        lag_us: 100,
        step: Step::Poll,
        error,
    }
}

/// 20 requests a second for 10 s at `latency_ms`; `errors_from..errors_to` fail.
fn samples(latency_ms: u64, errors_from: u64, errors_to: u64, kind: ErrorKind) -> Vec<Sample> {
    (0..200u64)
        .map(|i| {
            let at = i * 50;
            let error = (errors_from..errors_to).contains(&at).then_some(kind);
            sample(at, latency_ms, error)
        })
        .collect()
}

fn kill_w2(at_s: f64) -> FaultRecord {
    FaultRecord {
        description: "kill w2".into(),
        kind: "kill".into(),
        waiter: Some("w2".into()),
        planned_s: at_s,
        at_s,
        end_s: None,
        applied: true,
        note: String::new(),
    }
}

/// A verification where `lost` of `orders` orders (all created by w2) are gone.
fn verification(orders: usize, lost: usize) -> VerifySummary {
    let mut ledger = Ledger::new(0);
    let s = ledger.new_session();
    let mut obs = Vec::new();
    for i in 0..orders {
        let snap = OrderSnapshot {
            id: format!("o{i}"),
            status: "paid".into(),
            version: 5,
            contents: Contents::new(vec![("fries".into(), 1)], 2, vec![], String::new()),
        };
        let waiter = if i < lost { "w2" } else { "w1" };
        ledger.created(s, snap.clone(), Some(waiter.into()), Some("c".into()));
        obs.push(if i < lost {
            Observation::Missing(ErrorKind::SessionLost)
        } else {
            Observation::Found(snap)
        });
    }
    let ids = ledger.sessions[0].created.clone();
    verify::summarize(&[(
        ledger,
        ReadBack {
            orders: obs,
            sessions: vec![Listing::Listed(ids)],
        },
    )])
}

fn arch(name: &str, mode: Mode, store: StoreSpec) -> Architecture {
    Architecture {
        name: name.into(),
        mode,
        store,
    }
}

fn report() -> Report {
    let stateful = arch("stateful", Mode::Stateful, StoreSpec::Memory);
    let stateless = arch("stateless", Mode::Stateless, StoreSpec::Sqlite);
    // Stateful: faster, but from 4.0 s to 5.5 s its w2 diners get session-lost.
    let a = samples(2, 4000, 5500, ErrorKind::SessionLost);
    // Stateless: slower, a brief blip of 502s right after the kill.
    let b = samples(3, 4000, 4200, ErrorKind::Other5xx);
    let build = |arch: &Architecture, samples: &[Sample], v: VerifySummary| {
        ArchReport::build(ArchRun {
            arch,
            name: arch.name.clone(),
            rtt_ms: None,
            network: Vec::new(),
            waiters: 3,
            duration_s: 10.0,
            samples,
            failures: BTreeMap::from([("poll: 503 session-lost".to_string(), 3)]),
            arrivals_us: &[],
            diners: 20,
            shed: 0,
            faults: vec![kill_w2(4.0)],
            verification: v,
            notes: Vec::new(),
        })
    };
    Report {
        scenario: ScenarioInfo {
            name: "test <&> run".into(),
            description: "synthetic".into(),
            seed: 1,
            load: "closed loop, 20 diners".into(),
            duration_s: 10.0,
            waiters: 3,
            think_ms: [100, 400],
            faults: vec!["kill w2".into()],
            network: Vec::new(),
        },
        architectures: vec![
            build(&stateful, &a, verification(80, 12)),
            build(&stateless, &b, verification(80, 0)),
        ],
        sweep: None,
        files: Vec::new(),
    }
}

#[test]
fn figures_are_computed_from_the_samples() {
    let r = report();
    let a = &r.architectures[0];
    assert_eq!((a.requests, a.errors, a.ok), (200, 30, 170));
    assert!((a.throughput_rps - 17.0).abs() < 1e-9);
    assert_eq!(a.peak_rps, 20);
    assert_eq!(a.errors_by_kind.get("session-lost"), Some(&30));
    assert_eq!(a.seconds.len(), 10);
    let f = &a.faults[0];
    let rec = f.recovery.unwrap();
    assert_eq!(f.record.description, "kill w2");
    assert!(rec.impacted);
    assert_eq!(
        rec.recovered_at_s,
        Some(5.5),
        "second 5 fails its first half (recovery counts in 100 ms steps)"
    );
    let p = f.phases.unwrap();
    assert_eq!(
        (p.before.errors, p.during.errors, p.after.errors),
        (0, 30, 0)
    );
    assert_eq!((p.during.from_s, p.during.to_s), (4.0, 5.5));
    assert_eq!(a.verification.lost, 12);
    assert!(a.generator.send_lag_p99_ms > 0.0);
}

#[test]
fn the_table_puts_the_architectures_side_by_side() {
    let t = report().table();
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].contains("stateful") && lines[0].contains("stateless"),
        "{t}"
    );
    for row in [
        "throughput (req/s)",
        "p50 / p99 (ms)",
        "errors",
        "orders lost",
        "recovery (kill w2)",
    ] {
        assert!(t.contains(row), "missing {row}:\n{t}");
    }
    assert!(t.contains("12 of 80") && t.contains("0 of 80"), "{t}");
    assert!(
        t.contains("1.5 s"),
        "stateful recovered 1.5 s after the kill:\n{t}"
    );
}

#[test]
fn verdicts_are_derived_from_the_figures() {
    let v = report().verdicts();
    assert_eq!(v.len(), 2);
    assert!(
        v[0].starts_with("stateful: fastest (p50 2.0 ms, 1.5x faster than stateless)"),
        "{}",
        v[0]
    );
    assert!(
        v[0].contains("lost 12 of 80 orders when w2 died"),
        "{}",
        v[0]
    );
    assert!(v[0].contains("recovered 1.5 s after kill w2"), "{}", v[0]);
    assert!(
        v[1].starts_with("stateless: slower (p50 3.0 ms vs 2.0 ms for stateful)"),
        "{}",
        v[1]
    );
    assert!(
        v[1].contains("stateful) but lost none of its 80 orders;"),
        "{}",
        v[1]
    );
    assert!(
        v[1].ends_with("recovered 0.2 s after kill w2, 4 errors (2.0%) in all"),
        "{}",
        v[1]
    );
}

#[test]
fn the_json_holds_every_figure_and_reads_back() {
    let r = report();
    let text = json::render(&r);
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let a = &v["architectures"][0];
    assert_eq!(a["verification"]["lost_by_waiter"]["w2"], 12);
    assert_eq!(a["seconds"].as_array().unwrap().len(), 10);
    assert_eq!(
        a["faults"][0]["description"], "kill w2",
        "the fault record is flattened into the fault report"
    );
    assert!(a["faults"][0]["recovery"]["recovery_s"].is_number());
    assert_eq!(a["verification"]["checks"].as_array().unwrap().len(), 80);
    assert_eq!(a["verification"]["checks"][0]["verdict"], "lost");
}

/// Checks that `doc` is well-formed markup: every tag closed in order, attributes
/// quoted, `&` only in entities. HTML void elements need no closing tag.
fn assert_well_formed(doc: &str) {
    const VOID: [&str; 4] = ["meta", "br", "hr", "img"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find('<') {
        check_text(&rest[..start]);
        rest = &rest[start..];
        if let Some(after) = rest.strip_prefix("<!") {
            rest = &after[after.find('>').expect("unclosed declaration") + 1..];
            continue;
        }
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            let name = tag
                .split_whitespace()
                .next()
                .expect("a tag has a name")
                .to_string();
            if !VOID.contains(&name.as_str()) {
                stack.push(name);
            }
        }
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn check_text(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i + 1..];
        let semi = entity.find(';').expect("& without ;");
        assert!(
            entity[..semi]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '#'),
            "bad entity near {entity:.20}"
        );
    }
}

#[test]
fn the_charts_are_well_formed_svg_with_the_faults_marked() {
    let r = report();
    let charts = svg::charts(&r);
    let files: Vec<&str> = charts.iter().map(|c| c.file.as_str()).collect();
    assert_eq!(
        files,
        vec![
            "timeline-stateful.svg",
            "timeline-stateless.svg",
            "latency.svg"
        ]
    );
    for c in &charts {
        assert!(
            c.svg
                .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{}",
            c.file
        );
        assert_well_formed(&c.svg);
    }
    let timeline = &charts[0].svg;
    assert_eq!(
        timeline.matches("<polyline").count(),
        2,
        "answers and errors"
    );
    assert!(
        timeline.contains("stroke-dasharray=\"4 3\"") && timeline.contains(">kill w2</text>"),
        "the kill is marked"
    );
    let latency = &charts[2].svg;
    assert_eq!(
        latency.matches("<rect x=").count(),
        5 * 2 + 2,
        "5 percentiles x 2 architectures, plus 2 legend boxes"
    );
    assert!(
        latency.contains("<title>stateful p50: 2.0 ms</title>"),
        "{latency}"
    );
}

#[test]
fn the_page_is_self_contained_and_holds_table_charts_and_verdicts() {
    let r = report();
    let page = html::render(&r, &svg::charts(&r));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_well_formed(&page);
    assert!(
        page.contains("bistro lab: test &lt;&amp;&gt; run"),
        "names are escaped"
    );
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.contains("<h2>Side by side</h2>") && page.contains("recovery (kill w2)"));
    assert!(page.contains("lost 12 of 80 orders when w2 died"));
    assert!(page.contains("<h2>Before, during and after each fault</h2>"));
    assert!(!page.contains("<script"), "no script");
    let without_ns = page.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !without_ns.contains("http://") && !without_ns.contains("https://"),
        "no external URL"
    );
}

#[test]
fn writing_puts_every_file_in_the_output_directory() {
    let dir = crate::store::TempDir::new("report-test").unwrap();
    let out = dir.path().join("nested/report");
    let mut r = report();
    r.write(&out).unwrap();
    assert_eq!(
        r.files,
        vec![
            "report.json",
            "index.html",
            "timeline-stateful.svg",
            "timeline-stateless.svg",
            "latency.svg"
        ]
    );
    for f in &r.files {
        assert!(out.join(f).is_file(), "{f}");
    }
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(back.files, r.files);
}

#[test]
fn a_single_architecture_without_faults_has_a_plain_verdict() {
    let mut r = report();
    r.architectures.truncate(1);
    r.architectures[0].faults.clear();
    let v = r.verdicts();
    assert_eq!(v.len(), 1);
    assert!(
        v[0].starts_with("stateful: lost 12 of 80 orders;"),
        "{}",
        v[0]
    );
    assert!(v[0].ends_with("; 30 errors (15.0%) in all"), "{}", v[0]);
    assert!(
        r.architectures[0]
            .verification
            .checks
            .iter()
            .any(|c| c.verdict == Verdict::Lost)
    );
}

#[test]
fn an_open_loop_timeline_draws_the_offered_diners_on_their_own_axis() {
    let arch = arch("open", Mode::Stateful, StoreSpec::Memory);
    let samples = samples(2, 0, 0, ErrorKind::Timeout);
    let arrivals: Vec<u64> = (0..30u64).map(|i| i * 333_000).collect();
    let a = ArchReport::build(ArchRun {
        arch: &arch,
        name: arch.name.clone(),
        rtt_ms: None,
        network: Vec::new(),
        waiters: 3,
        duration_s: 10.0,
        samples: &samples,
        failures: BTreeMap::new(),
        arrivals_us: &arrivals,
        diners: 30,
        shed: 2,
        faults: Vec::new(),
        verification: VerifySummary::default(),
        notes: Vec::new(),
    });
    assert_eq!(a.offered_per_second.iter().sum::<u64>(), 30);
    assert_eq!(a.offered_per_second.len(), a.seconds.len());
    let svg = svg::timeline(&a, "open", (40.0, 10.0), Some(4.0));
    assert_well_formed(&svg);
    assert_eq!(
        svg.matches("<polyline").count(),
        3,
        "answers, errors and offered"
    );
    assert!(svg.contains("new diners per second") && svg.contains("stroke-dasharray=\"5 4\""));
    let closed = svg::timeline(
        &report().architectures[0],
        "closed",
        (40.0, 10.0),
        Some(4.0),
    );
    assert!(
        !closed.contains("new diners per second"),
        "a closed loop has no offered rate"
    );
}

/// Replicated mode's headline is "0 diverged", so the report must be able to say
/// otherwise: one order read back different from what was acknowledged shows as
/// diverged in the summary, in report.json, in the table and in the verdict line.
#[test]
fn a_diverged_order_shows_as_diverged_everywhere() {
    let mut ledger = Ledger::new(0);
    let s = ledger.new_session();
    let acked = |i: usize, spice: u8| OrderSnapshot {
        id: format!("o{i}"),
        status: "open".into(),
        version: 3,
        contents: Contents::new(vec![("fries".into(), 1)], spice, vec![], String::new()),
    };
    for i in 0..3 {
        ledger.created(s, acked(i, 2), Some("w1".into()), Some("c".into()));
    }
    // o2 comes back at the acknowledged version but with other contents: a stale copy
    // that a second leader changed on its own.
    let back = ReadBack {
        orders: vec![
            Observation::Found(acked(0, 2)),
            Observation::Found(acked(1, 2)),
            Observation::Found(acked(2, 4)),
        ],
        sessions: vec![Listing::Listed(ledger.sessions[0].created.clone())],
    };
    let summary = verify::summarize(&[(ledger, back)]);
    assert_eq!((summary.intact, summary.lost, summary.diverged), (2, 0, 1));

    let replicated = arch("replicated", Mode::Replicated, StoreSpec::Memory);
    let mut r = report();
    r.architectures.push(ArchReport::build(ArchRun {
        arch: &replicated,
        name: replicated.name.clone(),
        rtt_ms: None,
        network: Vec::new(),
        waiters: 3,
        duration_s: 10.0,
        samples: &samples(2, 0, 0, ErrorKind::Other5xx),
        failures: BTreeMap::new(),
        arrivals_us: &[],
        diners: 20,
        shed: 0,
        faults: vec![kill_w2(4.0)],
        verification: summary,
        notes: Vec::new(),
    }));

    let json: serde_json::Value = serde_json::from_str(&json::render(&r)).unwrap();
    assert_eq!(json["architectures"][2]["verification"]["diverged"], 1);

    let table = r.table();
    let row = table
        .lines()
        .find(|l| l.starts_with("diverged / duplicated"))
        .expect("a diverged row");
    assert!(row.trim_end().ends_with("1 / 0"), "{row}");

    let verdict = &r.verdicts()[2];
    assert!(verdict.starts_with("replicated:"), "{verdict}");
    assert!(
        verdict.contains("lost none of its 3 orders, but 1 diverged"),
        "{verdict}"
    );
}

/// A sweep of two architectures at 0, 1 and 2 ms: stateless pays 2 ms of latency per
/// millisecond of round trip, stateful nothing.
fn sweep_report() -> Report {
    use crate::scenario::{Link, Sweep};
    let stateful = arch("stateful", Mode::Stateful, StoreSpec::Memory);
    let stateless = arch(
        "stateless-redis",
        Mode::Stateless,
        StoreSpec::Url("redis://127.0.0.1:6379/".into()),
    );
    let sweep = Sweep {
        links: vec![Link::Store],
        rtt_ms: vec![0.0, 1.0, 2.0],
    };
    let mut runs = Vec::new();
    for &rtt in &sweep.rtt_ms {
        for a in [&stateful, &stateless] {
            let latency = if a.mode == Mode::Stateless {
                1 + 2 * rtt as u64
            } else {
                1
            };
            let network = if a.mode == Mode::Stateless {
                vec![LinkReport {
                    link: "store".into(),
                    rtt_ms: rtt,
                    proxies: 1,
                    connections: 3,
                    bytes_to_target: 1000,
                    bytes_from_target: 2000,
                    chunks: 10,
                    mean_held_ms: Some(rtt / 2.0 + 0.05),
                    ..LinkReport::default()
                }]
            } else {
                Vec::new()
            };
            runs.push(ArchReport::build(ArchRun {
                arch: a,
                name: format!("{}-{rtt}ms", a.name),
                rtt_ms: Some(rtt),
                network,
                waiters: 3,
                duration_s: 10.0,
                samples: &samples(latency, 0, 0, ErrorKind::Other5xx),
                failures: BTreeMap::new(),
                arrivals_us: &[],
                diners: 20,
                shed: 0,
                faults: Vec::new(),
                verification: verification(40, 0),
                notes: Vec::new(),
            }));
        }
    }
    let mut r = report();
    r.sweep = Some(SweepReport::build(&sweep, &[stateful, stateless], &runs));
    r.architectures = runs;
    r
}

#[test]
fn a_sweep_gathers_a_point_per_architecture_and_distance() {
    let r = sweep_report();
    let sweep = r.sweep.as_ref().unwrap();
    assert_eq!(sweep.links, vec!["store"]);
    assert_eq!(sweep.describe, "waiters to the store");
    let lines: Vec<(&str, bool, usize)> = sweep
        .lines
        .iter()
        .map(|l| (l.architecture.as_str(), l.affected, l.points.len()))
        .collect();
    assert_eq!(
        lines,
        vec![("stateful", false, 3), ("stateless-redis", true, 3)]
    );
    let far = &sweep.lines[1].points[2];
    assert_eq!(far.run, "stateless-redis-2ms");
    assert_eq!((far.rtt_ms, far.orders), (2.0, 40));
    // HDR histogram precision: within 0.1 %.
    assert!((far.p50_ms.unwrap() - 5.0).abs() < 0.01, "{far:?}");
    assert!((far.throughput_rps - 20.0).abs() < 1e-9);
    assert!((far.added_rtt_ms.unwrap() - 2.1).abs() < 1e-9, "{far:?}");
    assert_eq!(sweep.lines[0].points[2].added_rtt_ms, None, "no proxy");

    let table = r.table();
    assert!(
        table.starts_with("round trip: waiters to the store\n"),
        "{table}"
    );
    for needle in [
        "0 ms",
        "1 ms",
        "2 ms",
        "stateful (not on the link)",
        "p50 (ms)",
    ] {
        assert!(table.contains(needle), "{needle:?} missing:\n{table}");
    }
    let p50_row = table
        .lines()
        .find(|l| l.trim_start().starts_with("stateless-redis") && l.contains("5.0"))
        .unwrap_or_else(|| panic!("no p50 row for stateless-redis:\n{table}"));
    assert_eq!(
        p50_row.split_whitespace().collect::<Vec<_>>(),
        ["stateless-redis", "1.0", "3.0", "5.0"]
    );

    let verdicts = r.verdicts();
    assert_eq!(verdicts.len(), 2);
    assert!(
        verdicts[1].starts_with("stateless-redis: p50 1.0 ms at 0 ms, 5.0 ms at 2 ms (+4.0"),
        "{verdicts:?}"
    );
    assert!(
        verdicts[1].contains("lost none of its 120 orders"),
        "{verdicts:?}"
    );
    assert!(verdicts[0].contains("run-to-run noise"), "{verdicts:?}");
}

#[test]
fn a_sweep_is_drawn_written_and_read_back() {
    let mut r = sweep_report();
    let dir = crate::store::TempDir::new("sweep-report").unwrap();
    r.write(dir.path()).unwrap();
    assert!(r.files.contains(&"distance.svg".to_string()));
    assert!(
        !r.files.contains(&"latency.svg".to_string()),
        "the distance chart replaces the latency bars of 6 runs"
    );
    let svg = std::fs::read_to_string(dir.path().join("distance.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 4, "2 panels x 2 lines");
    assert_eq!(
        svg.matches("<circle").count(),
        12,
        "a point per run and panel"
    );
    assert_eq!(
        svg.matches("stroke-dasharray").count(),
        2,
        "stateful is dashed: the store is not on its path"
    );
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains("<h2>What distance costs</h2>"));
    assert!(html.contains("<h2>The delay proxies</h2>"));
    assert_eq!(
        html.matches("<svg").count(),
        1 + 6,
        "distance + a timeline per run"
    );
    let json = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert!(json.contains("\"sweep\"") && json.contains("\"mean_held_ms\""));
}
