//! Scenarios: what one lab run does, read from TOML.
//!
//! A scenario names the architectures to compare (stateful waiters behind the sticky
//! balancer, stateless waiters on a central store), the cluster each one gets (how many
//! waiters, how fast the kitchen is), the load (closed: a fixed crowd of diners who think
//! between requests; open: diners arriving at a rate, whether or not the servers keep up)
//! and the faults to inject (kill, restart or pause a waiter, stop the store). A
//! `[network]` section puts a distance (a round-trip time) between the parts, and a
//! `[sweep]` repeats every architecture at several distances.
//!
//! The file is parsed into raw serde structs that reject unknown keys, then validated
//! into the types below, so a typo or an impossible value is refused before any process
//! starts, with a message naming the key and the fix. Every architecture runs with the
//! same seed, the same load and the same faults: only the architecture differs.

mod parse;

use crate::error::LabError;
use std::fmt;
use std::time::Duration;

/// The canonical demo scenario's TOML, as shipped in `scenarios/demo.toml`.
pub const DEMO_TOML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scenarios/demo.toml"
));

/// One lab run: architectures, cluster, load and faults.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Short name, shown in the report.
    pub name: String,
    /// What the scenario shows, in a sentence or two.
    pub description: String,
    /// Seeds every diner's choices (diner `i` uses `seed + i`), so a run repeats.
    pub seed: u64,
    /// The cluster every architecture gets.
    pub cluster: ClusterSpec,
    /// The load every architecture gets.
    pub load: LoadSpec,
    /// The architectures under test, run one after the other in this order.
    pub architectures: Vec<Architecture>,
    /// Faults, injected into every architecture they apply to.
    pub faults: Vec<Fault>,
    /// The network distances between the parts (none by default: plain loopback).
    pub network: NetworkSpec,
    /// When set, every architecture runs once per distance of the sweep.
    pub sweep: Option<Sweep>,
}

impl Scenario {
    /// Parses and validates a scenario.
    ///
    /// # Errors
    /// [`LabError::Scenario`] naming the key that is wrong and what to write instead.
    pub fn from_toml(s: &str) -> Result<Scenario, LabError> {
        parse::parse(s)
    }

    /// The canonical demo: three waiters per architecture, stateful behind the sticky
    /// balancer and stateless on SQLite, 50 diners, one waiter killed at 40 % of each run.
    pub fn demo() -> Scenario {
        // The embedded file is validated by a unit test, so this cannot fail at run time.
        Scenario::from_toml(DEMO_TOML).expect("the embedded demo scenario is valid")
    }

    /// The faults that apply to `arch` (a store fault needs a store the lab started).
    pub fn faults_for<'a>(
        &'a self,
        arch: &'a Architecture,
    ) -> impl Iterator<Item = &'a Fault> + 'a {
        self.faults.iter().filter(move |f| f.applies_to(arch))
    }

    /// A rough upper bound of the wall-clock time of the whole run, for progress output:
    /// the load of every run plus a few seconds each to start and verify.
    pub fn estimated_duration(&self) -> Duration {
        let per_arch = self.load.duration + Duration::from_secs(4);
        per_arch * self.runs().len() as u32
    }

    /// Every run of the scenario, in order: each architecture once, or, with a sweep,
    /// each architecture at each distance (the distances in the outer loop, so a drift
    /// of the machine during the run spreads over every architecture alike).
    pub fn runs(&self) -> Vec<Run<'_>> {
        match &self.sweep {
            None => self
                .architectures
                .iter()
                .map(|arch| Run {
                    arch,
                    network: self.network,
                    rtt_ms: None,
                })
                .collect(),
            Some(sweep) => sweep
                .rtt_ms
                .iter()
                .flat_map(|&rtt| {
                    self.architectures.iter().map(move |arch| Run {
                        arch,
                        network: self.network.with(&sweep.links, rtt),
                        rtt_ms: Some(rtt),
                    })
                })
                .collect(),
        }
    }
}

/// One architecture under one network: what a single cluster is started for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run<'a> {
    /// The architecture.
    pub arch: &'a Architecture,
    /// The distances it runs at.
    pub network: NetworkSpec,
    /// The sweep's round trip for this run, when the scenario sweeps.
    pub rtt_ms: Option<f64>,
}

impl Run<'_> {
    /// The run's name in the report and its file names: the architecture's, with the
    /// sweep's distance appended (`stateless-redis-0.5ms`).
    pub fn name(&self) -> String {
        match self.rtt_ms {
            None => self.arch.name.clone(),
            Some(rtt) => format!("{}-{rtt}ms", self.arch.name),
        }
    }
}

/// A connection between two parts of a cluster that can be put at a distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    /// Waiters to the central store (PostgreSQL or Redis).
    Store,
    /// The balancer to each waiter.
    Waiter,
    /// A replicated waiter to its peers.
    Peer,
}

impl Link {
    /// The TOML name (`store`, `waiter`, `peer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Store => "store",
            Link::Waiter => "waiter",
            Link::Peer => "peer",
        }
    }

    /// What the link connects, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Link::Store => "waiters to the store",
            Link::Waiter => "balancer to the waiters",
            Link::Peer => "between replicated peers",
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The network distances of a cluster, each a round-trip time in milliseconds.
///
/// `None` is loopback as it is: no proxy. `Some(rtt)` puts a delay proxy on the link
/// that adds `rtt / 2` in each direction, each chunk varying by up to `jitter_ms`;
/// `Some(0.0)` (only a sweep's first point sets it) goes through the proxy without
/// delay, so every point of a sweep pays the same extra hop and differs only by the
/// distance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetworkSpec {
    /// Waiters to the store.
    pub store_rtt_ms: Option<f64>,
    /// The balancer to each waiter.
    pub waiter_rtt_ms: Option<f64>,
    /// Between replicated peers.
    pub peer_rtt_ms: Option<f64>,
    /// Up to this much more or less one-way delay per chunk, on every proxied link.
    pub jitter_ms: f64,
}

impl NetworkSpec {
    /// The round trip of `link`, if it goes through a proxy.
    pub fn rtt_ms(&self, link: Link) -> Option<f64> {
        match link {
            Link::Store => self.store_rtt_ms,
            Link::Waiter => self.waiter_rtt_ms,
            Link::Peer => self.peer_rtt_ms,
        }
    }

    /// This network with every link of `links` at `rtt_ms`.
    pub fn with(mut self, links: &[Link], rtt_ms: f64) -> NetworkSpec {
        for link in links {
            let slot = match link {
                Link::Store => &mut self.store_rtt_ms,
                Link::Waiter => &mut self.waiter_rtt_ms,
                Link::Peer => &mut self.peer_rtt_ms,
            };
            *slot = Some(rtt_ms);
        }
        self
    }

    /// One phrase per proxied link, e.g. `waiters to the store: 1 ms round trip ± 0.1
    /// ms`; empty for plain loopback.
    pub fn describe(&self) -> Vec<String> {
        [Link::Store, Link::Waiter, Link::Peer]
            .into_iter()
            .filter_map(|l| {
                let rtt = self.rtt_ms(l)?;
                Some(if self.jitter_ms > 0.0 {
                    format!(
                        "{}: {rtt} ms round trip, ± {} ms each way",
                        l.describe(),
                        self.jitter_ms
                    )
                } else {
                    format!("{}: {rtt} ms round trip", l.describe())
                })
            })
            .collect()
    }
}

/// Every architecture repeated at several distances.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// The links the distance is put on (e.g. the store, and the peers of a replicated
    /// architecture: "the other machine" of each architecture).
    pub links: Vec<Link>,
    /// The round trips, in milliseconds, increasing.
    pub rtt_ms: Vec<f64>,
}

impl Sweep {
    /// The links as a phrase, e.g. `the store and between peers`.
    pub fn describe_links(&self) -> String {
        let parts: Vec<&str> = self.links.iter().map(|l| l.describe()).collect();
        parts.join(", ")
    }
}

/// The cluster one architecture gets.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// Waiters behind the balancer, named `w1` .. `wN`.
    pub waiters: usize,
    /// `--kitchen-seconds`: cooking time.
    pub kitchen_seconds: f64,
    /// `--kitchen-queue-seconds`: wait before cooking starts.
    pub kitchen_queue_seconds: f64,
    /// `--store-timeout-ms`, when set.
    pub store_timeout_ms: Option<u64>,
    /// `--request-timeout-ms` of the waiters, when set.
    pub waiter_request_timeout_ms: Option<u64>,
    /// Extra arguments for every `bistro waiter`.
    pub waiter_args: Vec<String>,
    /// Extra arguments for `bistro balancer`.
    pub balancer_args: Vec<String>,
    /// How long a process may take to print its readiness line (`--ready-json`).
    pub ready_timeout: Duration,
}

impl ClusterSpec {
    /// The waiter ids, `w1` .. `wN`.
    pub fn waiter_ids(&self) -> Vec<String> {
        (1..=self.waiters).map(|i| format!("w{i}")).collect()
    }
}

/// How diners arrive and behave.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Closed or open.
    pub model: LoadModel,
    /// How long diners are sent, per architecture.
    pub duration: Duration,
    /// A diner's pause between two requests, drawn uniformly from this range.
    pub think: ThinkTime,
    /// Pause between two progress checks while the kitchen works.
    pub poll_interval: Duration,
    /// A diner gives up on a request after this long (counted as a timeout).
    pub request_timeout: Duration,
}

/// A uniform range of think times, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkTime {
    /// Shortest pause.
    pub min_ms: u64,
    /// Longest pause.
    pub max_ms: u64,
}

/// The load model.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadModel {
    /// A fixed crowd: each diner sends its next request after the previous answer and a
    /// think time, so a slow server slows the crowd down (and the offered load with it).
    Closed {
        /// How many diners.
        diners: usize,
    },
    /// Diners arrive at a rate whether or not the servers keep up; each makes one order
    /// from menu to payment. An arrival's first request counts its latency from the
    /// scheduled arrival, so a stalled server cannot hide its stall (no coordinated
    /// omission).
    Open {
        /// New diners per second at the start.
        arrivals_per_second: f64,
        /// When set, the rate grows linearly to this by the end (a capacity ramp).
        ramp_to_per_second: Option<f64>,
        /// Most diners in flight at once; arrivals beyond it are counted as shed.
        max_in_flight: usize,
    },
}

impl LoadModel {
    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        match self {
            LoadModel::Closed { diners } => format!("closed loop, {diners} diners"),
            LoadModel::Open {
                arrivals_per_second,
                ramp_to_per_second: None,
                ..
            } => {
                format!("open loop, {arrivals_per_second} new diners/s")
            }
            LoadModel::Open {
                arrivals_per_second,
                ramp_to_per_second: Some(to),
                ..
            } => {
                format!("open loop, {arrivals_per_second} to {to} new diners/s")
            }
        }
    }
}

/// Where a waiter keeps the diners' notes: the contract's [`bistro_proto::Mode`].
pub use bistro_proto::Mode;

/// The central store of a stateless architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// No central store (stateful waiters keep notes in memory).
    Memory,
    /// A fresh SQLite file in a temporary directory, shared by the waiters.
    Sqlite,
    /// A private `redis-server` the lab starts on a free port (and may stop as a fault).
    /// `durable` turns on the append-only file with an fsync per write, so a stop and
    /// start loses no acknowledged write.
    LabRedis {
        /// Whether the store survives a stop without losing acknowledged writes.
        durable: bool,
    },
    /// An existing server the lab does not own: `postgres://...` or `redis://...`.
    Url(String),
}

impl StoreSpec {
    /// The store's kind for reports (`memory`, `sqlite`, `redis`, `postgres`).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreSpec::Memory => "memory",
            StoreSpec::Sqlite => "sqlite",
            StoreSpec::LabRedis { .. } => "redis",
            StoreSpec::Url(u) if u.starts_with("redis://") => "redis",
            StoreSpec::Url(_) => "postgres",
        }
    }

    /// Whether the lab runs (and may stop) this store's process.
    pub fn lab_owned(&self) -> bool {
        matches!(self, StoreSpec::LabRedis { .. })
    }
}

/// One architecture under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architecture {
    /// Unique name (letters, digits, dashes), used in the report and file names.
    pub name: String,
    /// Stateful, stateless or replicated.
    pub mode: Mode,
    /// The central store (always [`StoreSpec::Memory`] for stateful and replicated).
    pub store: StoreSpec,
}

impl Architecture {
    /// A short label such as `stateless on sqlite`.
    pub fn label(&self) -> String {
        match self.mode {
            Mode::Stateful => "stateful, sticky sessions".to_string(),
            Mode::Stateless => format!("stateless on {}", self.store.kind()),
            Mode::Replicated => "replicated, a copy on a peer".to_string(),
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL a waiter; it stays down.
    Kill,
    /// SIGKILL a waiter and start it again with the same id on the same port, after
    /// `for_seconds` (default 0).
    Restart,
    /// SIGSTOP a waiter for `for_seconds`, then SIGCONT: it holds connections but answers
    /// nothing, like a process stuck in a long GC pause.
    Pause,
    /// SIGKILL the store the lab started; start it again after `for_seconds` if given.
    StoreStop,
    /// Take a waiter out the way an operator does before an upgrade: drain it at the
    /// balancer (no new sessions), with `handoff` moving its sessions to the other
    /// waiters (stateful waiters only: a replicated waiter's copies take over by
    /// themselves, a stateless one holds none); when no session is left, or after
    /// `for_seconds` (default: until the end of the run), the balancer removes it and
    /// the lab stops its process.
    Drain {
        /// Whether the balancer hands the waiter's sessions to the others.
        handoff: bool,
    },
}

impl FaultKind {
    /// The TOML name.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::StoreStop => "store-stop",
            FaultKind::Drain { handoff: false } => "drain",
            FaultKind::Drain { handoff: true } => "drain-handoff",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a fault starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultTime {
    /// A fraction of the load duration, in (0, 1).
    Fraction(f64),
    /// Seconds after the load starts.
    Seconds(f64),
}

/// One fault on the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// The waiter it happens to (`w1` .. `wN`); `None` for store faults.
    pub waiter: Option<String>,
    /// When it starts.
    pub at: FaultTime,
    /// How long it lasts (pause, restart, store-stop); `None` for instant faults.
    pub for_seconds: Option<f64>,
}

impl Fault {
    /// Seconds after the load starts at which the fault begins.
    pub fn start_seconds(&self, duration: Duration) -> f64 {
        match self.at {
            FaultTime::Fraction(f) => f * duration.as_secs_f64(),
            FaultTime::Seconds(s) => s,
        }
    }

    /// Seconds after the load starts at which the fault ends (the waiter is resumed or
    /// restarted, the store started again), or `None` when it lasts to the end.
    pub fn end_seconds(&self, duration: Duration) -> Option<f64> {
        let start = self.start_seconds(duration);
        match self.kind {
            FaultKind::Kill | FaultKind::Drain { .. } => None,
            FaultKind::Restart => Some(start + self.for_seconds.unwrap_or(0.0)),
            FaultKind::Pause | FaultKind::StoreStop => self.for_seconds.map(|d| start + d),
        }
    }

    /// Whether this fault can happen to `arch`: a store fault needs a store the lab owns.
    pub fn applies_to(&self, arch: &Architecture) -> bool {
        self.kind != FaultKind::StoreStop || arch.store.lab_owned()
    }

    /// A short description such as `kill w2` or `pause w1 for 3 s`.
    pub fn describe(&self) -> String {
        let target = self.waiter.as_deref().unwrap_or("the store");
        match (self.kind, self.for_seconds) {
            (FaultKind::Kill, _) => format!("kill {target}"),
            (FaultKind::Restart, None | Some(0.0)) => format!("restart {target}"),
            (FaultKind::Restart, Some(d)) => format!("restart {target} (down {d} s)"),
            (FaultKind::Pause, Some(d)) => format!("pause {target} for {d} s"),
            (FaultKind::Pause, None) => format!("pause {target}"),
            (FaultKind::StoreStop, Some(d)) => format!("stop the store for {d} s"),
            (FaultKind::StoreStop, None) => "stop the store".to_string(),
            (FaultKind::Drain { handoff: true }, _) => {
                format!("drain {target} with handoff, then stop it")
            }
            (FaultKind::Drain { handoff: false }, _) => format!("drain {target}, then stop it"),
        }
    }
}

#[cfg(test)]
mod tests;
