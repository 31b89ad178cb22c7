//! One architecture, measured: start its cluster, run the load with the faults on their
//! schedule, read everything back, compute the figures, stop every process.
//!
//! The cluster is owned *outside* the measuring future, which races the cancel signal:
//! whichever ends first, [`Cluster::shutdown`] runs next, so a Ctrl-C or a failure halfway
//! through still kills and reaps every process this architecture started.

use crate::audit;
use crate::cluster::Cluster;
use crate::error::LabError;
use crate::fault;
use crate::load::{self, Live, LoadRun};
use crate::progress::Bar;
use crate::report::{ArchReport, ArchRun};
use crate::scenario::{Fault, Run, Scenario};
use crate::verify;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest the read-back may take.
const READ_BACK_BUDGET: Duration = Duration::from_secs(30);

/// Measures one run (an architecture at its network distances); every process id it
/// started is appended to `pids`.
///
/// # Errors
/// [`LabError`] when the cluster does not start, or [`LabError::Cancelled`].
pub async fn run<F: Future<Output = ()>>(
    scenario: &Scenario,
    run: &Run<'_>,
    bin: &Path,
    bar: &Bar,
    cancel: Pin<&mut F>,
    pids: &mut Vec<u32>,
) -> Result<ArchReport, LabError> {
    let mut cluster = Cluster::new(bin, run.arch, &scenario.cluster, run.network);
    let result = tokio::select! {
        r = measure(scenario, run, &mut cluster, bar) => r,
        () = cancel => Err(LabError::Cancelled),
    };
    bar.phase("stopping the cluster");
    cluster.shutdown().await;
    pids.extend_from_slice(cluster.started_pids());
    match &result {
        Ok(r) => bar.finish(&format!(
            "done: {} requests, {} errors, {} of {} orders lost",
            r.requests, r.errors, r.verification.lost, r.verification.orders
        )),
        Err(e) => bar.finish(&format!("stopped: {e}")),
    }
    result
}

async fn measure(
    scenario: &Scenario,
    run: &Run<'_>,
    cluster: &mut Cluster,
    bar: &Bar,
) -> Result<ArchReport, LabError> {
    let arch = run.arch;
    bar.phase("starting the cluster");
    cluster.start().await?;
    let addr = cluster
        .balancer_addr()
        .expect("a started cluster has a balancer");
    let spec = &scenario.load;
    let faults: Vec<Fault> = scenario.faults_for(arch).cloned().collect();
    let kitchen = scenario.cluster.kitchen_queue_seconds + scenario.cluster.kitchen_seconds;
    let live = Arc::new(Live::default());
    let t0 = Instant::now();
    let load_run = LoadRun {
        spec: spec.clone(),
        seed: scenario.seed,
        addr,
        kitchen_budget: Duration::from_secs_f64(3.0 * kitchen + 5.0),
        t0,
        live: live.clone(),
    };
    let on_event = |line: String| bar.event(&line);
    let work = async {
        tokio::join!(
            load::drive(load_run),
            fault::run_schedule(cluster, &faults, spec.duration, t0, &on_event)
        )
    };
    // The ticker only updates the display; it ends with the work.
    let ticker = async {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            bar.load(t0.elapsed().min(spec.duration), &live);
        }
    };
    let (mut outcome, fault_records) = tokio::select! {
        out = work => out,
        _ = ticker => unreachable!("the ticker loops until the work is done"),
    };

    let network = cluster.links();
    let notes = cluster.unexpected_exits();
    for n in &notes {
        tracing::warn!(arch = %arch.name, "{n}");
    }
    bar.phase("verifying every acknowledged order");
    let diners = outcome.diners.len();
    let mut failures = std::collections::BTreeMap::new();
    for d in &outcome.diners {
        for (what, n) in &d.failures {
            *failures.entry(what.clone()).or_default() += n;
        }
    }
    let samples: Vec<_> = outcome
        .diners
        .iter_mut()
        .flat_map(|d| std::mem::take(&mut d.samples))
        .collect();
    let read = audit::read_back(outcome.diners, Instant::now() + READ_BACK_BUDGET).await;
    let verification = verify::summarize(&read);
    Ok(ArchReport::build(ArchRun {
        arch,
        name: run.name(),
        rtt_ms: run.rtt_ms,
        network,
        waiters: scenario.cluster.waiters,
        duration_s: spec.duration.as_secs_f64(),
        samples: &samples,
        failures,
        arrivals_us: &outcome.arrivals_us,
        diners,
        shed: outcome.shed,
        faults: fault_records,
        verification,
        notes,
    }))
}
