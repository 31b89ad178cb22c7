//! # bistro-lab: stateful or stateless, answered with real numbers
//!
//! The lab runs an experiment the way one would by hand, only repeatably. For each
//! architecture in a [`Scenario`] it
//!
//! 1. starts a real cluster as child processes of the `bistro` binary: the store (a
//!    fresh SQLite file, a private `redis-server`, or a server you point it at), N
//!    waiters, and a balancer in front (`cluster`), with a delay proxy on each link the
//!    scenario puts at a network distance (`delay`);
//! 2. sends simulated diners through the balancer, each with its own HTTP client and
//!    cookie jar, following the real order flow, closed or open loop (`diner`,
//!    `load`);
//! 3. injects faults on a schedule: kill, restart or pause a waiter, stop the store
//!    (`fault`);
//! 4. reads every acknowledged order back and judges it intact, lost, diverged or
//!    duplicated against the diner's own record (`audit`, `verify`);
//! 5. computes latency percentiles, per-second throughput and errors, the split around
//!    each fault and the recovery time (`stats`), and writes a report: a terminal
//!    table, one verdict line per architecture, `report.json`, and a self-contained
//!    `index.html` with SVG charts (`report`);
//! 6. stops every process it started, also when cancelled or when something fails.
//!
//! A scenario with a `[sweep]` runs every architecture once per distance, and the
//! report draws throughput and p50 against the distance.
//!
//! Architectures run one after the other, not side by side: on a two-core machine two
//! clusters would compete for the CPU and each would partly measure the other.
//!
//! The I/O is at the edges (cluster, diners, audit); verification, statistics and the
//! report are pure functions over plain data and are tested without any process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bistro_lab::LabError> {
//! use bistro_lab::{LabOptions, Scenario};
//! let opts = LabOptions { bin: "target/release/bistro".into(), out_dir: "bistro-report".into(), progress: true };
//! let report = bistro_lab::run(&Scenario::demo(), &opts, std::future::pending()).await?;
//! print!("{}", report.table());
//! for line in report.verdicts() {
//!     println!("{line}");
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod api;
mod audit;
mod check;
mod choice;
mod cluster;
mod delay;
mod diner;
mod error;
mod experiment;
mod fault;
mod ledger;
#[cfg(test)]
mod live_tests;
mod load;
mod process;
mod progress;
mod rate;
mod report;
mod sample;
mod scenario;
mod stats;
mod store;
mod verify;

pub use check::{SMOKE_TOML, end_to_end_check};
pub use delay::{Delay, DelayProxy, ProxyStats};
pub use error::LabError;
pub use fault::FaultRecord;
pub use process::free_ports;
pub use rate::{RateResult, max_rate};
pub use report::{
    ArchReport, FaultReport, GeneratorReport, LinkReport, Report, ScenarioInfo, SweepLine,
    SweepPoint, SweepReport,
};
pub use sample::{ErrorKind, Sample, Step};
pub use scenario::{
    Architecture, ClusterSpec, DEMO_TOML, Fault, FaultKind, FaultTime, Link, LoadModel, LoadSpec,
    Mode, NetworkSpec, Run, Scenario, StoreSpec, Sweep, ThinkTime,
};
pub use stats::{Latency, Phase, Phases, Recovery, Second};
pub use verify::{OrderCheck, Verdict, VerifySummary};

use std::future::Future;
use std::path::PathBuf;

/// Where the lab finds the binary and puts the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabOptions {
    /// The `bistro` binary whose `waiter` and `balancer` commands are started.
    pub bin: PathBuf,
    /// Where `report.json`, `index.html` and the charts are written (created if needed).
    pub out_dir: PathBuf,
    /// Show progress bars on stderr (only when it is a terminal).
    pub progress: bool,
}

/// Runs every architecture of `scenario` one after the other, writes the report into
/// `opts.out_dir`, and returns it. When `cancel` completes (e.g. on Ctrl-C), the run
/// stops, every process it started is killed, and [`LabError::Cancelled`] is returned.
///
/// # Errors
/// [`LabError`] when the binary or a process cannot be started, the report cannot be
/// written, or the run was cancelled. Faults, failed requests and lost orders are not
/// errors: they are measured and reported.
pub async fn run(
    scenario: &Scenario,
    opts: &LabOptions,
    cancel: impl Future<Output = ()> + Send,
) -> Result<Report, LabError> {
    run_collecting_pids(scenario, opts, cancel, &mut Vec::new()).await
}

/// [`run`] with the binary and output directory as plain arguments, progress bars on.
///
/// # Errors
/// As [`run`].
pub async fn run_scenario(
    scenario: Scenario,
    bin: PathBuf,
    out_dir: PathBuf,
    cancel: impl Future<Output = ()> + Send,
) -> Result<Report, LabError> {
    run(
        &scenario,
        &LabOptions {
            bin,
            out_dir,
            progress: true,
        },
        cancel,
    )
    .await
}

/// [`run`], also appending the id of every process it started to `pids`.
pub(crate) async fn run_collecting_pids(
    scenario: &Scenario,
    opts: &LabOptions,
    cancel: impl Future<Output = ()> + Send,
    pids: &mut Vec<u32>,
) -> Result<Report, LabError> {
    // Checked before anything starts, with the supervisor's own error for a program
    // that cannot be started.
    std::fs::metadata(&opts.bin).map_err(|source| bistro_supervise::Error::Spawn {
        what: "the bistro binary".into(),
        program: opts.bin.clone(),
        source,
    })?;
    let progress = progress::Progress::new(opts.progress);
    let mut cancel = std::pin::pin!(cancel);
    let mut architectures = Vec::new();
    for run in scenario.runs() {
        let bar = progress.bar(&run.name(), scenario.load.duration);
        let report =
            experiment::run(scenario, &run, &opts.bin, &bar, cancel.as_mut(), pids).await?;
        architectures.push(report);
    }
    let sweep = scenario
        .sweep
        .as_ref()
        .map(|s| report::SweepReport::build(s, &scenario.architectures, &architectures));
    let mut report = Report {
        scenario: report::ScenarioInfo::from_scenario(scenario),
        architectures,
        sweep,
        files: Vec::new(),
    };
    report.write(&opts.out_dir)?;
    Ok(report)
}
