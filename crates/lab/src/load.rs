//! The load: a crowd of diners (closed loop) or a stream of arrivals (open loop).
//!
//! **Closed**: N diners, each ordering meal after meal with think times in between. The
//! offered load follows the servers: if they slow down, so does the crowd. That is how
//! a restaurant with a fixed number of tables behaves, and it is the fair way to compare
//! what a fault does to the *same* diners.
//!
//! **Open**: diners arrive on a Poisson schedule (seeded) at a rate that may ramp up,
//! whether or not the servers keep up; each makes one order. An arrival's first request
//! counts its latency from the scheduled arrival time, so a stalled server (or a
//! generator running late) shows in the percentiles instead of quietly slowing the
//! arrivals down (no coordinated omission). Diners in flight are capped; an arrival
//! over the cap is counted as shed, never silently dropped.

use crate::diner::{Diner, DinerOutcome, DinerSetup};
use crate::scenario::{LoadModel, LoadSpec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Counters the progress display reads while the load runs.
#[derive(Debug, Default)]
pub struct Live {
    requests: AtomicU64,
    errors: AtomicU64,
    paid: AtomicU64,
}

impl Live {
    /// Counts one request.
    pub fn record(&self, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one paid order.
    pub fn paid(&self) {
        self.paid.fetch_add(1, Ordering::Relaxed);
    }

    /// `(requests, errors, paid orders)` so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.paid.load(Ordering::Relaxed),
        )
    }
}

/// Everything the load produced.
pub struct LoadOutcome {
    /// Every diner's ledger, clients and samples.
    pub diners: Vec<DinerOutcome>,
    /// Open loop: intended arrival times, µs since the start (empty for closed loop).
    pub arrivals_us: Vec<u64>,
    /// Open loop: arrivals turned away because too many diners were in flight.
    pub shed: u64,
}

/// The run-wide settings of a load.
pub struct LoadRun {
    /// The scenario's load.
    pub spec: LoadSpec,
    /// The scenario seed.
    pub seed: u64,
    /// The balancer.
    pub addr: SocketAddr,
    /// How long a diner waits for the kitchen.
    pub kitchen_budget: Duration,
    /// When the load starts.
    pub t0: Instant,
    /// Live counters.
    pub live: Arc<Live>,
}

impl LoadRun {
    fn setup(&self, index: usize) -> DinerSetup {
        DinerSetup {
            index,
            seed: self.seed,
            addr: self.addr,
            think: self.spec.think,
            poll_interval: self.spec.poll_interval,
            request_timeout: self.spec.request_timeout,
            kitchen_budget: self.kitchen_budget,
            t0: self.t0,
            end: self.t0 + self.spec.duration,
            live: self.live.clone(),
        }
    }
}

/// Runs the load until its duration is over and every diner has finished its last
/// request (each bounded by the request timeout).
pub async fn drive(run: LoadRun) -> LoadOutcome {
    match run.spec.model {
        LoadModel::Closed { diners } => closed(&run, diners).await,
        LoadModel::Open {
            arrivals_per_second,
            ramp_to_per_second,
            max_in_flight,
        } => {
            open(
                &run,
                arrivals_per_second,
                ramp_to_per_second.unwrap_or(arrivals_per_second),
                max_in_flight,
            )
            .await
        }
    }
}

async fn closed(run: &LoadRun, diners: usize) -> LoadOutcome {
    let mut set = JoinSet::new();
    for i in 0..diners {
        let diner = Diner::new(run.setup(i), run.t0);
        set.spawn(diner.run_closed());
    }
    LoadOutcome {
        diners: join_all(set).await,
        arrivals_us: Vec::new(),
        shed: 0,
    }
}

/// The arrival times (seconds) of a Poisson process whose rate goes linearly from
/// `from` to `to` over `duration` seconds.
pub fn arrival_schedule(seed: u64, from: f64, to: f64, duration: f64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_A441_7A1E);
    let mut out = Vec::new();
    let mut t = 0.0;
    loop {
        let rate = (from + (to - from) * (t / duration)).max(1e-3);
        let u: f64 = rng.random_range(0.0..1.0);
        t += -(1.0 - u).ln() / rate;
        if t >= duration {
            return out;
        }
        out.push(t);
    }
}

async fn open(run: &LoadRun, from: f64, to: f64, max_in_flight: usize) -> LoadOutcome {
    let schedule = arrival_schedule(run.seed, from, to, run.spec.duration.as_secs_f64());
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut set = JoinSet::new();
    let mut arrivals_us = Vec::with_capacity(schedule.len());
    let mut shed = 0;
    for (i, t) in schedule.into_iter().enumerate() {
        let at = run.t0 + Duration::from_secs_f64(t);
        tokio::time::sleep_until(at).await;
        arrivals_us.push((t * 1e6) as u64);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                // The diner's first request is due at its arrival time, even if this
                // loop is running late: the lateness is then part of its latency.
                let diner = Diner::new(run.setup(i), at);
                set.spawn(async move {
                    let outcome = diner.run_visit().await;
                    drop(permit);
                    outcome
                });
            }
            Err(_) => shed += 1,
        }
    }
    LoadOutcome {
        diners: join_all(set).await,
        arrivals_us,
        shed,
    }
}

/// Collects every diner; a panicking diner is a bug in the lab, so its panic goes on.
async fn join_all(mut set: JoinSet<DinerOutcome>) -> Vec<DinerOutcome> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(outcome) => out.push(outcome),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => tracing::error!("a diner task was cancelled: {e}"),
        }
    }
    out.sort_by_key(|d| d.ledger.diner);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arrival_schedule_is_seeded_and_follows_the_rate() {
        let a = arrival_schedule(7, 100.0, 100.0, 10.0);
        assert_eq!(
            a,
            arrival_schedule(7, 100.0, 100.0, 10.0),
            "same seed, same arrivals"
        );
        assert!(
            (900..1100).contains(&a.len()),
            "about 1000 arrivals, got {}",
            a.len()
        );
        assert!(a.windows(2).all(|w| w[0] <= w[1]) && a.iter().all(|&t| t < 10.0));
        let ramp = arrival_schedule(7, 10.0, 190.0, 10.0);
        let first = ramp.iter().filter(|&&t| t < 2.0).count();
        let last = ramp.iter().filter(|&&t| t >= 8.0).count();
        assert!(
            last > 4 * first,
            "a ramp brings more arrivals at the end: {first} vs {last}"
        );
    }
}
