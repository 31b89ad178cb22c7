//! From TOML to a validated [`Scenario`].
//!
//! The raw structs mirror the file and reject unknown keys (a misspelt key must not
//! silently leave a default in place); [`parse`] then checks every value and every
//! combination, naming the key at fault and what would be accepted.

use super::{
    Architecture, ClusterSpec, Fault, FaultKind, FaultTime, Link, LoadModel, LoadSpec, Mode,
    NetworkSpec, Scenario, StoreSpec, Sweep, ThinkTime,
};
use crate::error::LabError;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default)]
    cluster: RawCluster,
    load: RawLoad,
    #[serde(default)]
    architecture: Vec<RawArchitecture>,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    network: RawNetwork,
    sweep: Option<RawSweep>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    store_rtt_ms: Option<f64>,
    waiter_rtt_ms: Option<f64>,
    peer_rtt_ms: Option<f64>,
    jitter_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    rtt_ms: Vec<f64>,
    links: Option<Vec<String>>,
}

/// The longest round trip a scenario may set: a second is already another continent
/// several times over; more is a typo (seconds for milliseconds).
const MAX_RTT_MS: f64 = 1000.0;

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    waiters: Option<u64>,
    kitchen_seconds: Option<f64>,
    kitchen_queue_seconds: Option<f64>,
    store_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    #[serde(default)]
    waiter_args: Vec<String>,
    #[serde(default)]
    balancer_args: Vec<String>,
    ready_timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    model: String,
    duration_seconds: f64,
    diners: Option<u64>,
    arrivals_per_second: Option<f64>,
    ramp_to_per_second: Option<f64>,
    max_in_flight: Option<u64>,
    think_ms: Option<[u64; 2]>,
    poll_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchitecture {
    name: String,
    mode: String,
    store: Option<String>,
    durable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: String,
    waiter: Option<String>,
    at_fraction: Option<f64>,
    at_seconds: Option<f64>,
    for_seconds: Option<f64>,
    /// Drain faults: move the waiter's sessions to the others first.
    handoff: Option<bool>,
}

fn bad(msg: impl Into<String>) -> LabError {
    LabError::scenario(msg)
}

/// Checks that `v` (a finite number) lies in `lo..=hi`.
fn in_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<f64, LabError> {
    if !v.is_finite() || v < lo || v > hi {
        return Err(bad(format!(
            "{key} = {v} is out of range; use a value from {lo} to {hi}"
        )));
    }
    Ok(v)
}

fn in_range_u(key: &str, v: u64, lo: u64, hi: u64) -> Result<u64, LabError> {
    if v < lo || v > hi {
        return Err(bad(format!(
            "{key} = {v} is out of range; use a value from {lo} to {hi}"
        )));
    }
    Ok(v)
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// Parses and validates a scenario.
pub(super) fn parse(src: &str) -> Result<Scenario, LabError> {
    let raw: RawScenario =
        toml::from_str(src).map_err(|e| bad(e.to_string().trim_end().to_string()))?;
    let name = raw.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(bad("name must be 1 to 64 characters"));
    }
    let cluster = cluster(raw.cluster)?;
    let load = load(raw.load)?;
    let architectures = architectures(raw.architecture)?;
    let faults = raw
        .fault
        .into_iter()
        .enumerate()
        .map(|(i, f)| fault(i + 1, f, &cluster, &load, &architectures))
        .collect::<Result<Vec<_>, _>>()?;
    if faults.len() > 32 {
        return Err(bad(format!(
            "{} faults is too many; use at most 32",
            faults.len()
        )));
    }
    let (network, sweep) = network(raw.network, raw.sweep, &architectures)?;
    Ok(Scenario {
        name,
        description: raw.description.trim().to_string(),
        seed: raw.seed,
        cluster,
        load,
        architectures,
        faults,
        network,
        sweep,
    })
}

/// Validates `[network]` and `[sweep]` against the architectures they apply to.
fn network(
    raw: RawNetwork,
    sweep: Option<RawSweep>,
    archs: &[Architecture],
) -> Result<(NetworkSpec, Option<Sweep>), LabError> {
    // 0 (the default) leaves the link as plain loopback, without a proxy.
    let rtt = |key: &str, v: Option<f64>| -> Result<Option<f64>, LabError> {
        match v {
            None => Ok(None),
            Some(v) => {
                let v = in_range(&format!("network.{key}"), v, 0.0, MAX_RTT_MS)?;
                Ok((v > 0.0).then_some(v))
            }
        }
    };
    let net = NetworkSpec {
        store_rtt_ms: rtt("store_rtt_ms", raw.store_rtt_ms)?,
        waiter_rtt_ms: rtt("waiter_rtt_ms", raw.waiter_rtt_ms)?,
        peer_rtt_ms: rtt("peer_rtt_ms", raw.peer_rtt_ms)?,
        jitter_ms: in_range(
            "network.jitter_ms",
            raw.jitter_ms.unwrap_or(0.0),
            0.0,
            MAX_RTT_MS,
        )?,
    };
    let sweep = sweep.map(|s| sweep_spec(s, &net)).transpose()?;
    // Which links are put at a distance, by [network] or by the sweep.
    let mut links: Vec<Link> = [Link::Store, Link::Waiter, Link::Peer]
        .into_iter()
        .filter(|&l| net.rtt_ms(l).is_some())
        .collect();
    if let Some(s) = &sweep {
        links.extend(&s.links);
    }
    for link in &links {
        applies(*link, archs)?;
    }
    if net.jitter_ms > 0.0 && links.is_empty() {
        return Err(bad(
            "network.jitter_ms has no link to vary: set network.store_rtt_ms, waiter_rtt_ms or peer_rtt_ms, or a [sweep]",
        ));
    }
    Ok((net, sweep))
}

fn sweep_spec(raw: RawSweep, net: &NetworkSpec) -> Result<Sweep, LabError> {
    if raw.rtt_ms.is_empty() || raw.rtt_ms.len() > 12 {
        return Err(bad(format!(
            "sweep.rtt_ms has {} values; give 1 to 12 round trips in milliseconds, e.g. [0, 0.5, 1, 2]",
            raw.rtt_ms.len()
        )));
    }
    let mut rtt_ms = Vec::new();
    for v in raw.rtt_ms {
        let v = in_range("sweep.rtt_ms", v, 0.0, MAX_RTT_MS)?;
        if rtt_ms.last().is_some_and(|&last| v <= last) {
            return Err(bad(format!(
                "sweep.rtt_ms must increase (each distance once): {v} comes after {}",
                rtt_ms.last().copied().unwrap_or(0.0)
            )));
        }
        rtt_ms.push(v);
    }
    let names = raw.links.unwrap_or_else(|| vec!["store".to_string()]);
    if names.is_empty() {
        return Err(bad(
            "sweep.links is empty; name the links to put at each distance: \"store\", \"waiter\", \"peer\"",
        ));
    }
    let mut links = Vec::new();
    for name in names {
        let link = match name.as_str() {
            "store" => Link::Store,
            "waiter" => Link::Waiter,
            "peer" => Link::Peer,
            other => {
                return Err(bad(format!(
                    "sweep.links: {other:?} is unknown; use \"store\" (waiters to the store), \"waiter\" (balancer to waiters) or \"peer\" (between replicated waiters)"
                )));
            }
        };
        if links.contains(&link) {
            return Err(bad(format!("sweep.links names {name:?} twice")));
        }
        if net.rtt_ms(link).is_some() {
            return Err(bad(format!(
                "network.{name}_rtt_ms is set and the sweep varies the {name} link too; remove one of them"
            )));
        }
        links.push(link);
    }
    links.sort();
    Ok(Sweep { links, rtt_ms })
}

/// Refuses a distance on a link no architecture has, or one an architecture cannot
/// honour (a SQLite store is a file each waiter opens: there is no network to delay).
fn applies(link: Link, archs: &[Architecture]) -> Result<(), LabError> {
    match link {
        Link::Store => {
            if let Some(a) = archs.iter().find(|a| a.store == StoreSpec::Sqlite) {
                return Err(bad(format!(
                    "a store distance does not apply to architecture {:?}: its SQLite store is a file each waiter opens, with no network in between; use a PostgreSQL or Redis store, or remove the store distance",
                    a.name
                )));
            }
            if !archs.iter().any(|a| a.mode == Mode::Stateless) {
                return Err(bad(
                    "a store distance needs a stateless architecture (stateful and replicated waiters have no store)",
                ));
            }
        }
        Link::Peer => {
            if !archs.iter().any(|a| a.mode == Mode::Replicated) {
                return Err(bad(
                    "a peer distance needs a replicated architecture (only replicated waiters talk to peers)",
                ));
            }
        }
        Link::Waiter => {}
    }
    Ok(())
}

fn cluster(raw: RawCluster) -> Result<ClusterSpec, LabError> {
    let waiters = in_range_u("cluster.waiters", raw.waiters.unwrap_or(3), 1, 16)? as usize;
    let kitchen_seconds = in_range(
        "cluster.kitchen_seconds",
        raw.kitchen_seconds.unwrap_or(1.0),
        0.0,
        60.0,
    )?;
    let kitchen_queue_seconds = in_range(
        "cluster.kitchen_queue_seconds",
        raw.kitchen_queue_seconds.unwrap_or(0.5),
        0.0,
        60.0,
    )?;
    if let Some(ms) = raw.store_timeout_ms {
        in_range_u("cluster.store_timeout_ms", ms, 1, 600_000)?;
    }
    if let Some(ms) = raw.request_timeout_ms {
        in_range_u("cluster.request_timeout_ms", ms, 1, 600_000)?;
    }
    for (key, args) in [
        ("cluster.waiter_args", &raw.waiter_args),
        ("cluster.balancer_args", &raw.balancer_args),
    ] {
        if let Some(a) = args
            .iter()
            .find(|a| ["--listen", "--id", "--mode", "--store", "--backend"].contains(&a.as_str()))
        {
            return Err(bad(format!(
                "{key} must not contain {a}: the lab sets it for every process it starts"
            )));
        }
    }
    let ready = in_range(
        "cluster.ready_timeout_seconds",
        raw.ready_timeout_seconds.unwrap_or(20.0),
        1.0,
        300.0,
    )?;
    Ok(ClusterSpec {
        waiters,
        kitchen_seconds,
        kitchen_queue_seconds,
        store_timeout_ms: raw.store_timeout_ms,
        waiter_request_timeout_ms: raw.request_timeout_ms,
        waiter_args: raw.waiter_args,
        balancer_args: raw.balancer_args,
        ready_timeout: Duration::from_secs_f64(ready),
    })
}

fn load(raw: RawLoad) -> Result<LoadSpec, LabError> {
    let duration = in_range("load.duration_seconds", raw.duration_seconds, 1.0, 3600.0)?;
    let open_only = [
        ("arrivals_per_second", raw.arrivals_per_second.is_some()),
        ("ramp_to_per_second", raw.ramp_to_per_second.is_some()),
        ("max_in_flight", raw.max_in_flight.is_some()),
    ];
    let model = match raw.model.as_str() {
        "closed" => {
            if let Some((key, _)) = open_only.iter().find(|(_, set)| *set) {
                return Err(bad(format!(
                    "load.{key} belongs to the open model; remove it or set load.model = \"open\""
                )));
            }
            let diners = raw
                .diners
                .ok_or_else(|| bad("load.diners is required for model = \"closed\""))?;
            LoadModel::Closed {
                diners: in_range_u("load.diners", diners, 1, 5000)? as usize,
            }
        }
        "open" => {
            if raw.diners.is_some() {
                return Err(bad(
                    "load.diners belongs to the closed model; an open load sets load.arrivals_per_second instead",
                ));
            }
            let rate = raw
                .arrivals_per_second
                .ok_or_else(|| bad("load.arrivals_per_second is required for model = \"open\""))?;
            let rate = in_range("load.arrivals_per_second", rate, 0.1, 10_000.0)?;
            let ramp = raw
                .ramp_to_per_second
                .map(|r| in_range("load.ramp_to_per_second", r, 0.1, 10_000.0))
                .transpose()?;
            let max_in_flight = in_range_u(
                "load.max_in_flight",
                raw.max_in_flight.unwrap_or(1000),
                1,
                10_000,
            )? as usize;
            LoadModel::Open {
                arrivals_per_second: rate,
                ramp_to_per_second: ramp,
                max_in_flight,
            }
        }
        other => {
            return Err(bad(format!(
                "load.model = {other:?} is unknown; use \"closed\" or \"open\""
            )));
        }
    };
    let [min_ms, max_ms] = raw.think_ms.unwrap_or([100, 400]);
    if min_ms > max_ms || max_ms > 60_000 {
        return Err(bad(format!(
            "load.think_ms = [{min_ms}, {max_ms}] is invalid; give [shortest, longest] in milliseconds, shortest first, at most 60000"
        )));
    }
    let poll_ms = in_range_u("load.poll_ms", raw.poll_ms.unwrap_or(250), 10, 10_000)?;
    let timeout_ms = in_range_u(
        "load.request_timeout_ms",
        raw.request_timeout_ms.unwrap_or(2_000),
        50,
        120_000,
    )?;
    Ok(LoadSpec {
        model,
        duration: Duration::from_secs_f64(duration),
        think: ThinkTime { min_ms, max_ms },
        poll_interval: Duration::from_millis(poll_ms),
        request_timeout: Duration::from_millis(timeout_ms),
    })
}

fn architectures(raw: Vec<RawArchitecture>) -> Result<Vec<Architecture>, LabError> {
    if raw.is_empty() {
        return Err(bad(
            "the scenario has no [[architecture]]; add at least one (mode = \"stateful\" or \"stateless\")",
        ));
    }
    if raw.len() > 8 {
        return Err(bad(format!(
            "{} architectures is too many; compare at most 8",
            raw.len()
        )));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let at = format!("architecture #{} ({:?})", i + 1, a.name);
        if !is_slug(&a.name) {
            return Err(bad(format!(
                "{at}: name must be 1-32 lowercase letters, digits or dashes"
            )));
        }
        if !names.insert(a.name.clone()) {
            return Err(bad(format!(
                "{at}: the name is used twice; names must be unique"
            )));
        }
        // Exactly as written: a scenario file is not a command line.
        let mode = match Mode::ALL.into_iter().find(|m| m.as_str() == a.mode) {
            Some(mode) => mode,
            None => {
                return Err(bad(format!(
                    "{at}: mode = {:?} is unknown; use \"stateful\", \"stateless\" or \"replicated\"",
                    a.mode
                )));
            }
        };
        let store = match (mode, a.store.as_deref()) {
            (Mode::Stateful | Mode::Replicated, None) => StoreSpec::Memory,
            (Mode::Stateful | Mode::Replicated, Some(_)) => {
                return Err(bad(format!(
                    "{at}: a {} waiter keeps notes in its own memory; remove store, or use mode = \"stateless\"",
                    mode.as_str()
                )));
            }
            (Mode::Stateless, None | Some("sqlite")) => StoreSpec::Sqlite,
            (Mode::Stateless, Some("redis")) => StoreSpec::LabRedis {
                durable: a.durable.unwrap_or(true),
            },
            (Mode::Stateless, Some(url))
                if url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("redis://") =>
            {
                StoreSpec::Url(url.to_string())
            }
            (Mode::Stateless, Some(other)) => {
                return Err(bad(format!(
                    "{at}: store = {other:?} is unknown; use \"sqlite\" (a fresh file), \"redis\" (a redis-server the lab starts), or a postgres:// or redis:// URL"
                )));
            }
        };
        if a.durable.is_some() && !matches!(store, StoreSpec::LabRedis { .. }) {
            return Err(bad(format!(
                "{at}: durable only applies to store = \"redis\" (a store the lab starts)"
            )));
        }
        out.push(Architecture {
            name: a.name,
            mode,
            store,
        });
    }
    Ok(out)
}

fn fault(
    n: usize,
    raw: RawFault,
    cluster: &ClusterSpec,
    load: &LoadSpec,
    archs: &[Architecture],
) -> Result<Fault, LabError> {
    let at = format!("fault #{n} ({})", raw.kind);
    let kind = match raw.kind.as_str() {
        "kill" => FaultKind::Kill,
        "restart" => FaultKind::Restart,
        "pause" => FaultKind::Pause,
        "store-stop" => FaultKind::StoreStop,
        "drain" => FaultKind::Drain {
            handoff: raw.handoff.unwrap_or(false),
        },
        other => {
            return Err(bad(format!(
                "fault #{n}: kind = {other:?} is unknown; use \"kill\", \"restart\", \"pause\", \"store-stop\" or \"drain\""
            )));
        }
    };
    if raw.handoff.is_some() && !matches!(kind, FaultKind::Drain { .. }) {
        return Err(bad(format!(
            "{at}: handoff only applies to kind = \"drain\""
        )));
    }
    let waiter = match (kind, raw.waiter) {
        (FaultKind::StoreStop, Some(_)) => {
            return Err(bad(format!(
                "{at}: a store fault has no waiter; remove waiter"
            )));
        }
        (FaultKind::StoreStop, None) => None,
        (_, None) => {
            return Err(bad(format!(
                "{at}: waiter is required, e.g. waiter = \"w2\""
            )));
        }
        (_, Some(w)) => {
            let ids = cluster.waiter_ids();
            if !ids.contains(&w) {
                return Err(bad(format!(
                    "{at}: waiter {w:?} does not exist; this scenario runs {} waiters, w1 to w{}",
                    cluster.waiters, cluster.waiters
                )));
            }
            Some(w)
        }
    };
    let duration = load.duration.as_secs_f64();
    let time = match (raw.at_fraction, raw.at_seconds) {
        (Some(f), None) => {
            if !(f > 0.0 && f < 1.0) {
                return Err(bad(format!(
                    "{at}: at_fraction = {f} must lie strictly between 0 and 1"
                )));
            }
            FaultTime::Fraction(f)
        }
        (None, Some(s)) => {
            if !(s > 0.0 && s < duration) {
                return Err(bad(format!(
                    "{at}: at_seconds = {s} must lie strictly between 0 and the load duration ({duration} s)"
                )));
            }
            FaultTime::Seconds(s)
        }
        _ => {
            return Err(bad(format!(
                "{at}: give exactly one of at_fraction (0-1 of the run) or at_seconds"
            )));
        }
    };
    match (kind, raw.for_seconds) {
        (FaultKind::Kill, Some(_)) => {
            return Err(bad(format!(
                "{at}: a killed waiter stays down; to bring it back, use kind = \"restart\" with for_seconds"
            )));
        }
        (FaultKind::Pause, None) => {
            return Err(bad(format!(
                "{at}: for_seconds is required: how long the waiter stays paused"
            )));
        }
        (_, Some(d)) if !(d.is_finite() && d >= 0.0) => {
            return Err(bad(format!("{at}: for_seconds = {d} must be 0 or more")));
        }
        _ => {}
    }
    if kind == FaultKind::StoreStop && !archs.iter().any(|a| a.store.lab_owned()) {
        let hint = if archs.iter().any(|a| a.store == StoreSpec::Sqlite) {
            " (a SQLite store is a file opened inside each waiter: there is no store process to stop)"
        } else {
            " (the lab never stops a server it did not start)"
        };
        return Err(bad(format!(
            "{at}: no architecture has a store the lab started{hint}; use store = \"redis\" for a stateless architecture to test a store outage"
        )));
    }
    let fault = Fault {
        kind,
        waiter,
        at: time,
        for_seconds: raw.for_seconds,
    };
    if let Some(end) = fault.end_seconds(load.duration)
        && end >= duration
    {
        return Err(bad(format!(
            "{at}: it would end at {end:.1} s, after the load ends ({duration} s); start it earlier or shorten for_seconds"
        )));
    }
    Ok(fault)
}
