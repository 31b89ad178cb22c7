//! The lab's end-to-end check, for the `bistro` crate's integration tests (where the
//! binary's path is known): run a short scenario on real processes and hold the
//! numbers to what each architecture guarantees.
//!
//! - stateless waiters on one store, and replicated waiters, lose nothing when a waiter
//!   is killed;
//! - stateful waiters do lose orders then, and only the orders of the killed waiter;
//! - neither architecture diverges or duplicates an acknowledged order;
//! - every report file is written, and the page holds its charts;
//! - no process the lab started survives the run, nor a run cancelled halfway.

use crate::error::LabError;
use crate::report::Report;
use crate::scenario::Scenario;
use crate::{LabOptions, cluster, run_collecting_pids};
use std::path::Path;
use std::time::Duration;

/// A short version of the demo: 3 waiters, 12 diners, 6 s per architecture, w2 killed
/// at 40 %.
pub const SMOKE_TOML: &str = r#"
name = "smoke"
description = "A short end-to-end check: stateful vs stateless vs replicated, w2 killed at 40%."
seed = 3

[cluster]
waiters = 3
kitchen_seconds = 0.3
kitchen_queue_seconds = 0.2

[load]
model = "closed"
diners = 12
duration_seconds = 6
think_ms = [30, 120]
poll_ms = 100
request_timeout_ms = 2000

[[architecture]]
name = "stateful"
mode = "stateful"

[[architecture]]
name = "stateless"
mode = "stateless"
store = "sqlite"

[[architecture]]
name = "replicated"
mode = "replicated"

[[fault]]
kind = "kill"
waiter = "w2"
at_fraction = 0.4
"#;

fn fail(msg: impl Into<String>) -> LabError {
    LabError::Check(msg.into())
}

/// Runs the smoke scenario with the `bistro` binary at `bin`, writing the report into
/// `out_dir`, then a second run cancelled after two seconds; returns the first run's
/// report when every expectation holds.
///
/// # Errors
/// [`LabError::Check`] naming the expectation that failed, or the run's own error.
pub async fn end_to_end_check(bin: &Path, out_dir: &Path) -> Result<Report, LabError> {
    let scenario = Scenario::from_toml(SMOKE_TOML)?;
    let opts = LabOptions {
        bin: bin.to_path_buf(),
        out_dir: out_dir.to_path_buf(),
        progress: false,
    };
    let mut pids = Vec::new();
    let report = run_collecting_pids(&scenario, &opts, std::future::pending(), &mut pids).await?;
    survivors(&pids, "the run")?;

    let arch = |name: &str| {
        report
            .architectures
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| fail(format!("no {name} architecture in the report")))
    };
    let (stateful, stateless, replicated) =
        (arch("stateful")?, arch("stateless")?, arch("replicated")?);
    for a in [stateful, stateless, replicated] {
        let v = &a.verification;
        if a.ok == 0 || v.orders == 0 {
            return Err(fail(format!(
                "{}: no request succeeded or no order was made ({} ok, {} orders)",
                a.name, a.ok, v.orders
            )));
        }
        if v.diverged > 0 || v.duplicated > 0 {
            return Err(fail(format!(
                "{}: {} diverged and {} duplicated orders; expected none",
                a.name, v.diverged, v.duplicated
            )));
        }
        if !a.faults.iter().all(|f| f.record.applied) {
            return Err(fail(format!(
                "{}: a fault was not applied: {:?}",
                a.name, a.faults
            )));
        }
    }
    if stateless.verification.lost > 0 {
        return Err(fail(format!(
            "stateless lost {} orders when w2 was killed; a central store should lose none",
            stateless.verification.lost
        )));
    }
    if replicated.verification.lost > 0 {
        return Err(fail(format!(
            "replicated lost {} orders when w2 was killed; its peers hold copies of every acknowledged change",
            replicated.verification.lost
        )));
    }
    let lost = &stateful.verification.lost_by_waiter;
    if stateful.verification.lost == 0 || lost.keys().any(|w| w != "w2") {
        return Err(fail(format!(
            "stateful should lose the orders of w2 and only those; lost {} ({lost:?})",
            stateful.verification.lost
        )));
    }
    for file in &report.files {
        if !out_dir.join(file).is_file() {
            return Err(fail(format!(
                "the report lists {file} but it was not written"
            )));
        }
    }
    let html =
        std::fs::read_to_string(out_dir.join("index.html")).map_err(|source| LabError::Io {
            path: out_dir.join("index.html"),
            source,
        })?;
    if html.matches("<svg").count() < 3 {
        return Err(fail(
            "index.html should hold a timeline per architecture and the latency chart",
        ));
    }

    // Cancel a second run while its first cluster is under load.
    let mut pids = Vec::new();
    let cancel = tokio::time::sleep(Duration::from_secs(2));
    let cancelled = run_collecting_pids(&scenario, &opts, cancel, &mut pids).await;
    if !matches!(cancelled, Err(LabError::Cancelled)) {
        return Err(fail(format!(
            "a cancelled run should end with Cancelled, got {cancelled:?}"
        )));
    }
    survivors(&pids, "the cancelled run")?;
    Ok(report)
}

/// Fails if any of `pids` still exists.
fn survivors(pids: &[u32], what: &str) -> Result<(), LabError> {
    if pids.is_empty() {
        return Err(fail(format!("{what} started no process")));
    }
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| cluster::process_exists(p))
        .collect();
    if alive.is_empty() {
        Ok(())
    } else {
        Err(fail(format!("{what} left processes behind: {alive:?}")))
    }
}
