//! One architecture's cluster as real processes: the store, N waiters, a balancer.
//!
//! Everything is started from the `bistro` binary exactly as an operator would, on
//! `127.0.0.1:0`; each process's address comes from its `listening on` log line. The
//! waiters start first (the balancer needs their addresses), then the balancer with one
//! `--backend id=addr` per waiter. A waiter restarted by a fault gets the same id and the
//! same port, so the balancer finds it where it was.
//!
//! A scenario's `[network]` puts a [`DelayProxy`] on a link: the waiters get the store
//! proxy's address in their `--store` URL, the balancer gets each waiter's proxy as its
//! `--backend`, and replicated waiters get their peers' proxies as `--peer`. A proxy
//! keeps its target's address across restarts (a waiter comes back on the same port,
//! the lab's redis-server too), so faults work through it unchanged.
//!
//! [`Cluster::shutdown`] kills and reaps every process and stops every proxy; it is
//! called on every path (end of run, failure, cancel), and a dropped
//! [`bistro_supervise::Proc`] (or a proxy's `Drop`) covers a panic.

use crate::delay::{Delay, DelayProxy};
use crate::error::LabError;
use crate::report::LinkReport;
use crate::scenario::{Architecture, ClusterSpec, Link, Mode, NetworkSpec};
use crate::store::{Endpoint, Store};
use bistro_supervise::{Proc, Spec};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Attempts at starting a replicated group whose chosen port was taken (see
/// `Cluster::start_replicated_group`).
const PORT_ATTEMPTS: u32 = 3;

/// Whether a waiter failed to start because its chosen port was taken meanwhile (its
/// last words are the operating system's `EADDRINUSE`).
fn port_taken(error: &LabError) -> bool {
    matches!(error, LabError::Process(bistro_supervise::Error::Exited { log, .. })
        if log.contains("Address already in use"))
}

/// One waiter's slot: it keeps its id and port across restarts.
struct Waiter {
    id: String,
    addr: Option<SocketAddr>,
    proc: Option<Proc>,
    /// The delay proxy its peers reach it through (replicated, with a peer distance).
    peer_proxy: Option<DelayProxy>,
    /// The delay proxy the balancer reaches it through (with a waiter distance).
    balancer_proxy: Option<DelayProxy>,
}

/// How a drain fault ended (see [`Cluster::drain_waiter`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DrainOutcome {
    /// No session was left (else the deadline passed).
    pub done: bool,
    /// Whether sessions were handed off.
    pub handoff: bool,
    /// Sessions handed to other waiters.
    pub moved: u64,
    /// Sessions left on the waiter when it was removed.
    pub lost: u64,
    /// Sessions it still held at the end.
    pub left: u64,
    /// From the drain request to its end.
    pub took: Duration,
}

impl DrainOutcome {
    /// One line for the fault's record.
    pub fn describe(&self) -> String {
        let how = if self.done {
            "drained"
        } else {
            "deadline passed"
        };
        if self.handoff {
            format!(
                "{how} in {:.1} s: {} sessions handed off, {} left behind",
                self.took.as_secs_f64(),
                self.moved,
                self.left
            )
        } else {
            format!(
                "{how} in {:.1} s: {} sessions left behind",
                self.took.as_secs_f64(),
                self.left
            )
        }
    }
}

/// The processes of one architecture.
pub struct Cluster {
    bin: PathBuf,
    arch: Architecture,
    spec: ClusterSpec,
    store: Store,
    waiters: Vec<Waiter>,
    balancer: Option<(Proc, SocketAddr)>,
    /// The balancer's admin API (for drain faults).
    admin: Option<SocketAddr>,
    started: Vec<u32>,
    /// A replicated group's shared secret (generated per cluster).
    peer_secret: String,
    /// The distances to put between the parts.
    network: NetworkSpec,
    /// The delay proxy in front of the store, and the store URL that points at it.
    store_proxy: Option<(DelayProxy, String)>,
}

impl Cluster {
    /// An empty cluster; [`Cluster::start`] brings it up.
    pub fn new(
        bin: &Path,
        arch: &Architecture,
        spec: &ClusterSpec,
        network: NetworkSpec,
    ) -> Cluster {
        Cluster {
            bin: bin.to_path_buf(),
            arch: arch.clone(),
            spec: spec.clone(),
            store: Store::None,
            waiters: spec
                .waiter_ids()
                .into_iter()
                .map(|id| Waiter {
                    id,
                    addr: None,
                    proc: None,
                    peer_proxy: None,
                    balancer_proxy: None,
                })
                .collect(),
            balancer: None,
            admin: None,
            started: Vec::new(),
            peer_secret: format!("lab-{}", rand::random::<u128>()),
            network,
            store_proxy: None,
        }
    }

    /// The delay on `link`, if the network puts it at a distance.
    fn delay(&self, link: Link) -> Option<Delay> {
        self.network
            .rtt_ms(link)
            .map(|rtt| Delay::from_rtt_ms(rtt, self.network.jitter_ms))
    }

    /// Puts the store at its distance: a proxy in front of it, and the URL the waiters
    /// get pointed at the proxy.
    async fn distance_store(&mut self) -> Result<(), LabError> {
        let Some(delay) = self.delay(Link::Store) else {
            return Ok(());
        };
        let url = match &self.store {
            // No store, no distance (the scenario only puts the store at a distance
            // when some architecture has one).
            Store::None => return Ok(()),
            Store::Sqlite { .. } => {
                return Err(LabError::scenario(
                    "a SQLite store is a file each waiter opens: there is no network to put a distance on",
                ));
            }
            Store::LabRedis { url, .. } | Store::External { url } => url.clone(),
        };
        let endpoint = Endpoint::of(&url)?;
        let target = endpoint.resolve().await?;
        let proxy = DelayProxy::start("store", target, delay).await?;
        let proxied = endpoint.replaced(&url, proxy.addr());
        self.store_proxy = Some((proxy, proxied));
        Ok(())
    }

    /// Starts the store, the waiters and the balancer. On error, whatever did start is
    /// still owned by the cluster: call [`Cluster::shutdown`].
    ///
    /// # Errors
    /// [`LabError`] when a process does not start.
    pub async fn start(&mut self) -> Result<(), LabError> {
        self.store =
            Store::provide(&self.arch.store, &self.arch.name, self.spec.ready_timeout).await?;
        self.started.extend(self.store.pid());
        self.distance_store().await?;
        if self.arch.mode == Mode::Replicated {
            self.start_replicated_group().await?;
        } else {
            for i in 0..self.waiters.len() {
                self.start_waiter(i).await?;
            }
        }
        if let Some(delay) = self.delay(Link::Waiter) {
            for w in &mut self.waiters {
                let target = w.addr.expect("every waiter started above");
                let name = format!("waiter {}", w.id);
                w.balancer_proxy = Some(DelayProxy::start(&name, target, delay).await?);
            }
        }
        let mut args = vec![
            "balancer".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            // Every simulated diner comes from 127.0.0.1: the per-address abuse limits
            // would count the whole dining room as one client. A scenario can set them
            // again through `balancer_args`.
            "--max-connections-per-ip".into(),
            "0".into(),
            "--session-rate-per-ip".into(),
            "0".into(),
        ];
        for w in &self.waiters {
            let addr = match &w.balancer_proxy {
                Some(p) => p.addr(),
                None => w.addr.expect("every waiter started above"),
            };
            args.extend(["--backend".to_string(), format!("{}={addr}", w.id)]);
        }
        args.extend(self.spec.balancer_args.iter().cloned());
        let name = format!("{} balancer", self.arch.name);
        // The waiters' secret lets a drain fault hand their sessions off.
        let envs = [("BISTRO_PEER_SECRET", self.peer_secret.as_str())];
        let spec = Spec::bistro(name, &self.bin)
            .args(&args)
            .envs(envs)
            .isolated();
        let (proc, addr) = Proc::start(&spec, self.spec.ready_timeout).await?;
        self.started.push(proc.pid());
        let ready = addr.expect("a readiness line carries the addresses");
        let addr = ready.http;
        self.admin = ready.admin;
        self.balancer = Some((proc, addr));
        tracing::info!(arch = %self.arch.name, %addr, "cluster ready");
        Ok(())
    }

    /// The balancer's address, where diners go.
    pub fn balancer_addr(&self) -> Option<SocketAddr> {
        self.balancer.as_ref().map(|(_, a)| *a)
    }

    /// Every process id the cluster ever started (for checking that none survived).
    pub fn started_pids(&self) -> &[u32] {
        &self.started
    }

    fn waiter_args(&self, id: &str, listen: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "waiter".into(),
            "--id".into(),
            id.into(),
            "--listen".into(),
            listen.into(),
            "--mode".into(),
            self.arch.mode.as_str().into(),
            "--kitchen-seconds".into(),
            self.spec.kitchen_seconds.to_string(),
            "--kitchen-queue-seconds".into(),
            self.spec.kitchen_queue_seconds.to_string(),
            // The lab's diners all start sessions from one address, far faster than a
            // waiter's abuse limit expects of real traffic; the lab measures the
            // architecture, not that limit.
            "--session-rate".into(),
            "0".into(),
        ];
        let url = match &self.store_proxy {
            Some((_, proxied)) => Some(proxied.as_str()),
            None => self.store.url(),
        };
        if let Some(url) = url {
            args.extend(["--store".to_string(), url.to_string()]);
        }
        if let Some(ms) = self.spec.store_timeout_ms {
            args.extend(["--store-timeout-ms".to_string(), ms.to_string()]);
        }
        if let Some(ms) = self.spec.waiter_request_timeout_ms {
            args.extend(["--request-timeout-ms".to_string(), ms.to_string()]);
        }
        if self.arch.mode == Mode::Replicated {
            for peer in self.waiters.iter().filter(|w| w.id != id) {
                let addr = match &peer.peer_proxy {
                    Some(p) => p.addr(),
                    None => peer
                        .addr
                        .expect("a replicated group's ports are chosen first"),
                };
                args.extend(["--peer".to_string(), format!("{}={addr}", peer.id)]);
            }
        }
        args.extend(self.spec.waiter_args.iter().cloned());
        args
    }

    /// Starts a replicated group. Its waiters name each other, so their ports are chosen
    /// before any of them starts; a port that was free when chosen can be taken by
    /// another program before the waiter binds it (seen in CI, with other tests
    /// starting servers beside the lab). Then the whole group starts again on fresh
    /// ports, at most [`PORT_ATTEMPTS`] times: its peers already name the lost port.
    async fn start_replicated_group(&mut self) -> Result<(), LabError> {
        let mut attempt = 1;
        loop {
            let ports = crate::process::free_ports(self.waiters.len())?;
            for (w, port) in self.waiters.iter_mut().zip(ports) {
                w.addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
            // Their proxies can start before them: a proxy connects to its target
            // only when a connection arrives.
            if let Some(delay) = self.delay(Link::Peer) {
                for w in &mut self.waiters {
                    let target = w.addr.expect("chosen above");
                    let name = format!("peer {}", w.id);
                    w.peer_proxy = Some(DelayProxy::start(&name, target, delay).await?);
                }
            }
            let mut started = Ok(());
            for i in 0..self.waiters.len() {
                started = self.start_waiter(i).await;
                if started.is_err() {
                    break;
                }
            }
            match started {
                Err(e) if attempt < PORT_ATTEMPTS && port_taken(&e) => {
                    tracing::warn!(arch = %self.arch.name, attempt, "a replicated waiter's port was taken before it could bind it; starting the group again on fresh ports");
                    for w in &mut self.waiters {
                        if let Some(mut p) = w.proc.take() {
                            p.kill();
                        }
                        if let Some(mut proxy) = w.peer_proxy.take() {
                            proxy.shutdown().await;
                        }
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_waiter(&mut self, i: usize) -> Result<(), LabError> {
        let id = self.waiters[i].id.clone();
        let listen = self.waiters[i]
            .addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let args = self.waiter_args(&id, &listen);
        let name = format!("{} waiter {id}", self.arch.name);
        // A replicated group needs the secret; a stateful waiter given it can hand its
        // sessions off when a drain fault asks.
        let envs = [("BISTRO_PEER_SECRET", self.peer_secret.as_str())];
        let envs = if self.arch.mode != Mode::Stateless {
            &envs[..]
        } else {
            &[]
        };
        let spec = Spec::bistro(name, &self.bin)
            .args(&args)
            .envs(envs.iter().copied())
            .isolated();
        let (proc, addr) = Proc::start(&spec, self.spec.ready_timeout).await?;
        self.started.push(proc.pid());
        let w = &mut self.waiters[i];
        w.addr = addr.map(|r| r.http).or(w.addr);
        w.proc = Some(proc);
        Ok(())
    }

    fn index(&self, id: &str) -> Result<usize, LabError> {
        self.waiters
            .iter()
            .position(|w| w.id == id)
            .ok_or_else(|| LabError::scenario(format!("there is no waiter {id:?} in this cluster")))
    }

    /// SIGKILLs waiter `id`; a no-op (returning `false`) if it is already down.
    ///
    /// # Errors
    /// [`LabError::Scenario`] for an unknown id.
    pub async fn kill_waiter(&mut self, id: &str) -> Result<bool, LabError> {
        let i = self.index(id)?;
        let Some(mut p) = self.waiters[i].proc.take() else {
            return Ok(false);
        };
        p.kill();
        Ok(true)
    }

    /// Starts waiter `id` again with the same id on the same port, killing it first if
    /// it is still running.
    ///
    /// # Errors
    /// [`LabError`] when it does not start.
    pub async fn restart_waiter(&mut self, id: &str) -> Result<(), LabError> {
        self.kill_waiter(id).await?;
        let i = self.index(id)?;
        self.start_waiter(i).await
    }

    /// Drains waiter `id` at the balancer (with `handoff` for a stateful waiter), waits
    /// until the drain ends (no session left, or `deadline`), when the balancer removes
    /// it, and stops its process: an operator taking a waiter out for an upgrade.
    /// `None` if it is already down.
    ///
    /// # Errors
    /// [`LabError::Scenario`] for an unknown id, or when the balancer refuses or does not
    /// answer.
    pub async fn drain_waiter(
        &mut self,
        id: &str,
        handoff: bool,
        deadline: Duration,
    ) -> Result<Option<DrainOutcome>, LabError> {
        let i = self.index(id)?;
        if self.waiters[i].proc.is_none() {
            return Ok(None);
        }
        let admin = self
            .admin
            .ok_or_else(|| LabError::scenario("the balancer did not report its admin address"))?;
        let client = bistro_client::Client::new(admin).with_timeout(Duration::from_secs(10));
        let fail = |what: String| LabError::scenario(format!("drain {id}: {what}"));
        let handoff = handoff && self.arch.mode == Mode::Stateful;
        let body = serde_json::json!({
            "handoff": handoff,
            "deadline_seconds": deadline.as_secs().max(1),
            "remove_when_done": true,
        });
        let started = tokio::time::Instant::now();
        let asked = client
            .post_json(&format!("/backends/{id}/drain"), &body)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if asked.status != 200 {
            return Err(fail(format!(
                "the balancer answered {}: {}",
                asked.status,
                asked.text()
            )));
        }
        let view = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let drains = client
                .get("/drains")
                .await
                .map_err(|e| fail(e.to_string()))?;
            let view = drains.value()[id].clone();
            if view["state"] != "draining" {
                break view;
            }
            if started.elapsed() > deadline + Duration::from_secs(10) {
                return Err(fail(format!("still draining after its deadline: {view}")));
            }
        };
        let took = started.elapsed();
        self.kill_waiter(id).await?;
        let count = |k: &str| view[k].as_u64().unwrap_or(0);
        Ok(Some(DrainOutcome {
            done: view["state"] == "done",
            handoff,
            moved: count("moved"),
            lost: count("lost"),
            left: count("sessions_left"),
            took,
        }))
    }

    /// SIGSTOPs waiter `id`; `false` if it is down.
    ///
    /// # Errors
    /// [`LabError::Process`] when the signal cannot be sent.
    pub async fn pause_waiter(&mut self, id: &str) -> Result<bool, LabError> {
        let i = self.index(id)?;
        match self.waiters[i].proc.as_mut() {
            Some(p) => p.pause().map(|()| true).map_err(LabError::from),
            None => Ok(false),
        }
    }

    /// SIGCONTs waiter `id`; `false` if it is down or not paused.
    ///
    /// # Errors
    /// [`LabError::Process`] when the signal cannot be sent.
    pub async fn resume_waiter(&mut self, id: &str) -> Result<bool, LabError> {
        let i = self.index(id)?;
        match self.waiters[i].proc.as_mut() {
            Some(p) if p.is_paused() => p.resume().map(|()| true).map_err(LabError::from),
            _ => Ok(false),
        }
    }

    /// Processes that exited although no fault stopped them (a crash during the run),
    /// described for the report.
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((p, _)) = self.balancer.as_mut()
            && p.has_exited()
        {
            out.push(format!(
                "{} exited during the run; its last log lines:\n{}",
                p.name(),
                p.log_tail()
            ));
        }
        for w in &mut self.waiters {
            if let Some(p) = w.proc.as_mut()
                && p.has_exited()
            {
                out.push(format!(
                    "{} exited during the run; its last log lines:\n{}",
                    p.name(),
                    p.log_tail()
                ));
            }
        }
        out
    }

    /// Kills the store's process; `false` if the lab runs none or it is down.
    pub async fn stop_store(&mut self) -> bool {
        let had = self.store.pid().is_some();
        self.store.stop().await;
        had
    }

    /// Starts the store's process again.
    ///
    /// # Errors
    /// [`LabError`] when it does not start.
    pub async fn start_store(&mut self) -> Result<(), LabError> {
        self.store.start(self.spec.ready_timeout).await?;
        self.started.extend(self.store.pid());
        Ok(())
    }

    /// What each delay proxy carried, one entry per link that has proxies.
    pub fn links(&self) -> Vec<LinkReport> {
        let mut out = Vec::new();
        let mut add = |link: Link, proxies: Vec<&DelayProxy>| {
            let Some(rtt_ms) = self.network.rtt_ms(link) else {
                return;
            };
            if proxies.is_empty() {
                return;
            }
            let mut r = LinkReport {
                link: link.as_str().to_string(),
                rtt_ms,
                jitter_ms: self.network.jitter_ms,
                proxies: proxies.len(),
                ..LinkReport::default()
            };
            let (mut chunks, mut held_us) = (0, 0);
            for p in proxies {
                let s = p.stats();
                r.connections += s.connections;
                r.refused += s.refused;
                r.bytes_to_target += s.bytes_to_target;
                r.bytes_from_target += s.bytes_from_target;
                chunks += s.chunks;
                held_us += s.held_us;
            }
            r.chunks = chunks;
            r.mean_held_ms = crate::delay::ProxyStats {
                chunks,
                held_us,
                ..Default::default()
            }
            .mean_held_ms();
            out.push(r);
        };
        add(
            Link::Store,
            self.store_proxy.iter().map(|(p, _)| p).collect(),
        );
        add(
            Link::Waiter,
            self.waiters
                .iter()
                .filter_map(|w| w.balancer_proxy.as_ref())
                .collect(),
        );
        add(
            Link::Peer,
            self.waiters
                .iter()
                .filter_map(|w| w.peer_proxy.as_ref())
                .collect(),
        );
        out
    }

    /// Kills and reaps every process (balancer first, so no new work reaches the
    /// waiters; the store last), stops every delay proxy, and removes the temporary
    /// files.
    pub async fn shutdown(&mut self) {
        if let Some((mut p, _)) = self.balancer.take() {
            p.kill();
        }
        for w in &mut self.waiters {
            if let Some(mut p) = w.proc.take() {
                p.kill();
            }
            for proxy in [w.balancer_proxy.take(), w.peer_proxy.take()]
                .into_iter()
                .flatten()
            {
                let mut proxy = proxy;
                proxy.shutdown().await;
            }
        }
        if let Some((mut proxy, _)) = self.store_proxy.take() {
            proxy.shutdown().await;
        }
        self.store.stop().await;
        self.store = Store::None;
    }
}

/// Whether process `pid` still exists (a zombie counts: it was never reaped).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_taken_port_starts_the_group_again() {
        let exited = |log: &str| {
            LabError::Process(bistro_supervise::Error::Exited {
                what: "replicated waiter w2".into(),
                status: "exit status: 1".into(),
                log: log.into(),
            })
        };
        assert!(port_taken(&exited(
            "  error: cannot listen on 127.0.0.1:35809: Address already in use (os error 98)"
        )));
        assert!(!port_taken(&exited("  error: cannot open store: boom")));
        assert!(!port_taken(&LabError::scenario("Address already in use")));
    }
}
