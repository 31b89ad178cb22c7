//! The report: every figure of a run, and the ways it is shown.
//!
//! [`Report`] is plain data built from what was measured (samples, fault records,
//! verification) by pure functions, so it is tested without processes. It is shown as
//! a terminal table with one column per architecture ([`Report::table`]), a one-line
//! verdict per architecture ([`Report::verdicts`]), `report.json` (every figure, serde),
//! and `index.html` with hand-written SVG charts, each also written as its own `.svg`.

mod html;
mod json;
mod svg;
mod table;
mod verdict;

use crate::error::LabError;
use crate::fault::FaultRecord;
use crate::sample::{Sample, Step};
use crate::scenario::{Architecture, Scenario};
use crate::stats::{self, Latency, Phases, Recovery, Second};
use crate::verify::VerifySummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The scenario, as the report describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Seed.
    pub seed: u64,
    /// The load model, e.g. `closed loop, 50 diners`.
    pub load: String,
    /// Load duration per architecture, seconds.
    pub duration_s: f64,
    /// Waiters per architecture.
    pub waiters: usize,
    /// Think time range, ms.
    pub think_ms: [u64; 2],
    /// The faults, described.
    pub faults: Vec<String>,
    /// The network distances every run has, described (empty: plain loopback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
}

impl ScenarioInfo {
    /// The report's view of `s`.
    pub fn from_scenario(s: &Scenario) -> ScenarioInfo {
        ScenarioInfo {
            name: s.name.clone(),
            description: s.description.clone(),
            seed: s.seed,
            load: s.load.model.describe(),
            duration_s: s.load.duration.as_secs_f64(),
            waiters: s.cluster.waiters,
            think_ms: [s.load.think.min_ms, s.load.think.max_ms],
            faults: s.faults.iter().map(|f| f.describe()).collect(),
            network: s.network.describe(),
        }
    }
}

/// How the load generator itself kept up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// Diners that took part.
    pub diners: usize,
    /// 99th percentile of how late requests left compared with their intended time, ms.
    pub send_lag_p99_ms: f64,
    /// The latest a request left, ms.
    pub send_lag_max_ms: f64,
    /// Open loop: arrivals turned away because too many diners were in flight.
    pub shed: u64,
}

/// One fault and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// What was done, when.
    #[serde(flatten)]
    pub record: FaultRecord,
    /// The run split around it (`None` when it was not applied).
    pub phases: Option<Phases>,
    /// How the service came back (`None` when it was not applied).
    pub recovery: Option<Recovery>,
}

/// One network link of a run and what its delay proxies carried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// `store`, `waiter` or `peer`.
    pub link: String,
    /// The round trip the proxies added, ms.
    pub rtt_ms: f64,
    /// Up to this much more or less per one-way delay, ms.
    pub jitter_ms: f64,
    /// Proxies on the link (one per target).
    pub proxies: usize,
    /// Connections they accepted.
    pub connections: u64,
    /// Connections closed at once because the target was down.
    pub refused: u64,
    /// Bytes carried towards the targets.
    pub bytes_to_target: u64,
    /// Bytes carried back.
    pub bytes_from_target: u64,
    /// Chunks delivered, both directions.
    #[serde(default)]
    pub chunks: u64,
    /// The mean time a chunk was held, one way, ms: the delay actually added (the
    /// configured half round trip, plus the timer's overshoot).
    pub mean_held_ms: Option<f64>,
}

/// Every figure of one architecture (of one run of it, in a sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchReport {
    /// Name from the scenario; in a sweep, with the run's distance appended
    /// (`stateless-redis-0.5ms`).
    pub name: String,
    /// The architecture's name from the scenario.
    #[serde(default)]
    pub architecture: String,
    /// In a sweep, the round trip of this run, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// The links this run had at a distance, and what their proxies carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<LinkReport>,
    /// E.g. `stateless on sqlite`.
    pub label: String,
    /// `stateful` or `stateless`.
    pub mode: String,
    /// `memory`, `sqlite`, `redis`, `postgres`.
    pub store: String,
    /// Waiters.
    pub waiters: usize,
    /// Load duration, seconds.
    pub duration_s: f64,
    /// Requests sent (attempts, retries included).
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// 2xx answers that arrived during the load, per second of load.
    pub throughput_rps: f64,
    /// The best whole second.
    pub peak_rps: u64,
    /// Orders paid (a full visit).
    pub orders_paid: u64,
    /// Latency of 2xx answers (`None` if there was none).
    pub latency: Option<Latency>,
    /// Latency per step of the visit.
    pub latency_by_step: BTreeMap<String, Latency>,
    /// Failed requests per kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Failed requests by step, HTTP status and problem type (or transport error).
    pub failures: BTreeMap<String, u64>,
    /// Per-second answers and failures.
    pub seconds: Vec<Second>,
    /// Open loop: new diners per second as scheduled (empty for a closed loop).
    pub offered_per_second: Vec<u64>,
    /// Faults and their effect.
    pub faults: Vec<FaultReport>,
    /// The read-back.
    pub verification: VerifySummary,
    /// The generator's own figures.
    pub generator: GeneratorReport,
    /// What a reader must know to trust the figures (e.g. a process that crashed).
    pub notes: Vec<String>,
}

/// What one architecture's run produced, before any maths.
pub struct ArchRun<'a> {
    /// The architecture.
    pub arch: &'a Architecture,
    /// The run's name (see [`ArchReport::name`]).
    pub name: String,
    /// In a sweep, the run's round trip, ms.
    pub rtt_ms: Option<f64>,
    /// The links at a distance.
    pub network: Vec<LinkReport>,
    /// Waiters.
    pub waiters: usize,
    /// Load duration, seconds.
    pub duration_s: f64,
    /// Every request.
    pub samples: &'a [Sample],
    /// Failed requests by step, status and problem type.
    pub failures: BTreeMap<String, u64>,
    /// Open loop: intended arrival times, µs.
    pub arrivals_us: &'a [u64],
    /// Diners that took part.
    pub diners: usize,
    /// Open loop: shed arrivals.
    pub shed: u64,
    /// The faults as carried out.
    pub faults: Vec<FaultRecord>,
    /// The read-back's verdicts.
    pub verification: VerifySummary,
    /// Remarks for the reader (see [`ArchReport::notes`]).
    pub notes: Vec<String>,
}

impl ArchReport {
    /// Computes every figure of one run.
    pub fn build(run: ArchRun<'_>) -> ArchReport {
        let samples = run.samples;
        let requests = samples.len() as u64;
        let ok = samples.iter().filter(|s| s.is_ok()).count() as u64;
        // Throughput counts the answers that arrived while the load ran, not the last
        // stragglers after it.
        let load_end_us = (run.duration_s * 1e6) as u64;
        let ok_within = samples
            .iter()
            .filter(|s| s.is_ok() && s.end_us() < load_end_us)
            .count() as u64;
        let seconds = stats::per_second(samples, run.duration_s);
        let run_end = seconds.len() as f64;
        let faults = run
            .faults
            .into_iter()
            .map(|record| {
                if !record.applied {
                    return FaultReport {
                        record,
                        phases: None,
                        recovery: None,
                    };
                }
                let end = record.end_s.unwrap_or(record.at_s);
                let recovery = stats::recovery(samples, record.at_s, end, run.duration_s);
                // "During" lasts until the fault ended and the service recovered, and at
                // least the first second after the fault: the one recovery looked at.
                let until = recovery
                    .recovered_at_s
                    .unwrap_or(run_end)
                    .max(end)
                    .max(record.at_s + 1.0);
                let phases = stats::phases(samples, record.at_s, until, run_end);
                FaultReport {
                    record,
                    phases: Some(phases),
                    recovery: Some(recovery),
                }
            })
            .collect();
        let lag = stats::latency(samples.iter().map(|s| s.lag_us));
        ArchReport {
            name: run.name,
            architecture: run.arch.name.clone(),
            rtt_ms: run.rtt_ms,
            network: run.network,
            label: run.arch.label(),
            mode: run.arch.mode.as_str().to_string(),
            store: run.arch.store.kind().to_string(),
            waiters: run.waiters,
            duration_s: run.duration_s,
            requests,
            ok,
            errors: requests - ok,
            error_rate: if requests == 0 {
                0.0
            } else {
                (requests - ok) as f64 / requests as f64
            },
            throughput_rps: ok_within as f64 / run.duration_s,
            peak_rps: stats::peak_per_second(&seconds, run.duration_s),
            orders_paid: samples
                .iter()
                .filter(|s| s.step == Step::Pay && s.is_ok())
                .count() as u64,
            latency: stats::ok_latency(samples),
            latency_by_step: stats::latency_by_step(samples),
            errors_by_kind: stats::errors_by_kind(samples),
            failures: run.failures,
            offered_per_second: if run.arrivals_us.is_empty() {
                Vec::new()
            } else {
                stats::count_per_second(run.arrivals_us, seconds.len())
            },
            seconds,
            faults,
            verification: run.verification,
            generator: GeneratorReport {
                diners: run.diners,
                send_lag_p99_ms: lag.map(|l| l.p99_ms).unwrap_or(0.0),
                send_lag_max_ms: lag.map(|l| l.max_ms).unwrap_or(0.0),
                shed: run.shed,
            },
            notes: run.notes,
        }
    }
}

/// One point of a sweep: an architecture's figures at one distance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The round trip, ms.
    pub rtt_ms: f64,
    /// The run's name in [`Report::architectures`].
    pub run: String,
    /// 2xx answers per second of load.
    pub throughput_rps: f64,
    /// Median latency of answered requests, ms (`None`: nothing was answered).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Requests sent.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Orders read back.
    pub orders: u32,
    /// Orders lost.
    pub lost: u32,
    /// Orders diverged or duplicated.
    pub diverged: u32,
    /// The round trip the proxies actually added, ms: twice the mean time they held a
    /// chunk on the swept links (above the configured value by the timer's overshoot,
    /// which grows with the machine's load). `None` when no chunk went through.
    #[serde(default)]
    pub added_rtt_ms: Option<f64>,
}

/// One architecture across the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepLine {
    /// The architecture's name.
    pub architecture: String,
    /// E.g. `stateless on redis`.
    pub label: String,
    /// Whether the swept links reach this architecture at all (a stateful waiter has
    /// no store and no peer: its points only show the run-to-run spread).
    pub affected: bool,
    /// One point per distance, in increasing order.
    pub points: Vec<SweepPoint>,
}

/// Every architecture at every distance: the figures of the distance chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The links put at each distance (`store`, `waiter`, `peer`).
    pub links: Vec<String>,
    /// The same, described (`waiters to the store, between replicated peers`).
    pub describe: String,
    /// The distances, round trip in ms.
    pub rtt_ms: Vec<f64>,
    /// One line per architecture.
    pub lines: Vec<SweepLine>,
}

impl SweepReport {
    /// Gathers the sweep's points from the runs' reports.
    pub fn build(
        sweep: &crate::scenario::Sweep,
        archs: &[Architecture],
        runs: &[ArchReport],
    ) -> SweepReport {
        use crate::scenario::{Link, Mode};
        let lines = archs
            .iter()
            .map(|a| {
                let affected = sweep.links.iter().any(|l| match l {
                    Link::Store => a.mode == Mode::Stateless,
                    Link::Peer => a.mode == Mode::Replicated,
                    Link::Waiter => true,
                });
                let points = runs
                    .iter()
                    .filter(|r| r.architecture == a.name)
                    .filter_map(|r| {
                        Some(SweepPoint {
                            rtt_ms: r.rtt_ms?,
                            run: r.name.clone(),
                            throughput_rps: r.throughput_rps,
                            p50_ms: r.latency.map(|l| l.p50_ms),
                            p99_ms: r.latency.map(|l| l.p99_ms),
                            requests: r.requests,
                            errors: r.errors,
                            orders: r.verification.orders,
                            lost: r.verification.lost,
                            diverged: r.verification.diverged + r.verification.duplicated,
                            added_rtt_ms: added_rtt_ms(r, &sweep.links),
                        })
                    })
                    .collect();
                SweepLine {
                    architecture: a.name.clone(),
                    label: a.label(),
                    affected,
                    points,
                }
            })
            .collect();
        SweepReport {
            links: sweep.links.iter().map(|l| l.as_str().to_string()).collect(),
            describe: sweep.describe_links(),
            rtt_ms: sweep.rtt_ms.clone(),
            lines,
        }
    }
}

/// Twice the mean time `run`'s proxies held a chunk on `links` (over all their
/// chunks).
fn added_rtt_ms(run: &ArchReport, links: &[crate::scenario::Link]) -> Option<f64> {
    let (mut chunks, mut held_ms) = (0u64, 0.0);
    for l in &run.network {
        if links.iter().any(|k| k.as_str() == l.link)
            && let Some(mean) = l.mean_held_ms
        {
            chunks += l.chunks;
            held_ms += mean * l.chunks as f64;
        }
    }
    (chunks > 0).then(|| 2.0 * held_ms / chunks as f64)
}

/// The whole report of a lab run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario.
    pub scenario: ScenarioInfo,
    /// One entry per run (per architecture, or per architecture and distance in a
    /// sweep), in run order.
    pub architectures: Vec<ArchReport>,
    /// A sweep's figures by architecture and distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepReport>,
    /// Files written into the output directory.
    pub files: Vec<String>,
}

impl Report {
    /// The terminal table: one column per architecture; for a sweep, one row per
    /// architecture and one column per distance.
    pub fn table(&self) -> String {
        match &self.sweep {
            Some(sweep) => table::render_sweep(sweep),
            None => table::render(self),
        }
    }

    /// One plain-language line per architecture, derived from the figures.
    pub fn verdicts(&self) -> Vec<String> {
        match &self.sweep {
            Some(sweep) => verdict::sweep_verdicts(sweep),
            None => verdict::verdicts(self),
        }
    }

    /// Writes `report.json`, `index.html` and one `.svg` per chart into `dir` (created
    /// if needed), and records the file names in [`Report::files`].
    ///
    /// # Errors
    /// [`LabError::Io`] when a file cannot be written.
    pub fn write(&mut self, dir: &Path) -> Result<(), LabError> {
        std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let charts = svg::charts(self);
        let mut files: Vec<String> = vec!["report.json".into(), "index.html".into()];
        files.extend(charts.iter().map(|c| c.file.clone()));
        self.files = files;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| LabError::Io { path, source })
        };
        for chart in &charts {
            write(&chart.file, &chart.svg)?;
        }
        write("report.json", &json::render(self))?;
        write("index.html", &html::render(self, &charts))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
