//! Faults on a schedule: kill, restart, pause or drain a waiter, stop the store.
//!
//! A fault with a duration has two actions (begin, end): pause/resume, kill/start for a
//! restart, stop/start for the store. All actions are sorted on one timeline and carried
//! out at their time, measured from the start of the load. The report uses the times
//! *measured* here (when the signal was actually sent, when a restarted waiter was ready
//! again), not the planned ones.
//!
//! A fault that cannot be carried out (a waiter that is already down cannot be paused; a
//! restarted waiter that does not come back) does not stop the run: it is recorded with
//! what happened, and the report shows it.

use crate::cluster::Cluster;
use crate::scenario::{Fault, FaultKind};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// What happened to one fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// E.g. `kill w2`.
    pub description: String,
    /// `kill`, `restart`, `pause` or `store-stop`.
    pub kind: String,
    /// The waiter, if any.
    pub waiter: Option<String>,
    /// Planned start, seconds after the load started.
    pub planned_s: f64,
    /// Measured start (when the signal was sent).
    pub at_s: f64,
    /// Measured end (resumed, restarted and ready, store back), `None` if it lasted.
    pub end_s: Option<f64>,
    /// Whether it was carried out.
    pub applied: bool,
    /// What went wrong, if anything.
    pub note: String,
}

enum Action {
    Begin,
    End,
}

/// Carries out `faults` on `cluster`, each at its time after `t0`; `on_event` hears a
/// line per action (for the progress display).
pub async fn run_schedule(
    cluster: &mut Cluster,
    faults: &[Fault],
    duration: Duration,
    t0: Instant,
    on_event: &(dyn Fn(String) + Sync),
) -> Vec<FaultRecord> {
    let mut records: Vec<FaultRecord> = faults
        .iter()
        .map(|f| FaultRecord {
            description: f.describe(),
            kind: f.kind.as_str().to_string(),
            waiter: f.waiter.clone(),
            planned_s: f.start_seconds(duration),
            at_s: f.start_seconds(duration),
            end_s: None,
            applied: false,
            note: String::new(),
        })
        .collect();
    let mut timeline: Vec<(f64, usize, Action)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        timeline.push((f.start_seconds(duration), i, Action::Begin));
        if let Some(end) = f.end_seconds(duration) {
            timeline.push((end, i, Action::End));
        }
    }
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (at, i, action) in timeline {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(at)).await;
        let fault = &faults[i];
        let rec = &mut records[i];
        let now = || t0.elapsed().as_secs_f64();
        match action {
            Action::Begin => {
                rec.at_s = now();
                let rest_s = (duration.as_secs_f64() - rec.at_s - 0.5).max(1.0);
                match begin(cluster, fault, rest_s).await {
                    Ok(Begun::Started) => rec.applied = true,
                    Ok(Begun::Finished(note)) => {
                        rec.applied = true;
                        rec.end_s = Some(now());
                        rec.note = note;
                    }
                    Err(note) => rec.note = note,
                }
                on_event(format!(
                    "{:>5.1} s  {}{}",
                    rec.at_s,
                    rec.description,
                    suffix(&rec.note)
                ));
            }
            Action::End if rec.applied => {
                let result = end(cluster, fault).await;
                rec.end_s = Some(now());
                if let Err(note) = result {
                    rec.note = note;
                }
                on_event(format!(
                    "{:>5.1} s  end of {}{}",
                    now(),
                    rec.description,
                    suffix(&rec.note)
                ));
            }
            Action::End => {}
        }
    }
    records
}

fn suffix(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    }
}

/// What beginning a fault did.
enum Begun {
    /// It is under way (its end, if any, is another action).
    Started,
    /// It ran to its end already (a drain), with what it did.
    Finished(String),
}

/// Begins `fault`; `rest_s` is what is left of the run (a drain's default deadline).
async fn begin(cluster: &mut Cluster, fault: &Fault, rest_s: f64) -> Result<Begun, String> {
    let waiter = fault.waiter.as_deref().unwrap_or_default();
    let done = match fault.kind {
        FaultKind::Kill | FaultKind::Restart => cluster
            .kill_waiter(waiter)
            .await
            .map_err(|e| e.to_string())?,
        FaultKind::Pause => cluster
            .pause_waiter(waiter)
            .await
            .map_err(|e| e.to_string())?,
        FaultKind::StoreStop => cluster.stop_store().await,
        FaultKind::Drain { handoff } => {
            // A drain holds the schedule until it ends: what it measures is how long
            // taking the waiter out takes.
            let deadline = Duration::from_secs_f64(fault.for_seconds.unwrap_or(rest_s));
            return match cluster.drain_waiter(waiter, handoff, deadline).await {
                Ok(Some(outcome)) => Ok(Begun::Finished(outcome.describe())),
                Ok(None) => Err(format!("not applied: {waiter} was already down")),
                Err(e) => Err(e.to_string()),
            };
        }
    };
    if done {
        Ok(Begun::Started)
    } else if fault.kind == FaultKind::StoreStop {
        Err("not applied: the store was already down".into())
    } else {
        Err(format!("not applied: {waiter} was already down"))
    }
}

async fn end(cluster: &mut Cluster, fault: &Fault) -> Result<(), String> {
    let waiter = fault.waiter.as_deref().unwrap_or_default();
    match fault.kind {
        FaultKind::Kill | FaultKind::Drain { .. } => Ok(()),
        FaultKind::Restart => cluster
            .restart_waiter(waiter)
            .await
            .map_err(|e| format!("the restart failed: {e}")),
        FaultKind::Pause => cluster
            .resume_waiter(waiter)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        FaultKind::StoreStop => cluster
            .start_store()
            .await
            .map_err(|e| format!("the store did not come back: {e}")),
    }
}
