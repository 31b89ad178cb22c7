//! `bistro bench connections`: many concurrent keep-alive clients through bistro's
//! balancer, nginx and HAProxy in front of the same waiter, in one run.
//!
//! What a proxy does with ten thousand connections is a different question from how
//! fast it moves requests over sixty-four: whether every client is answered, whether a
//! proxy runs out of file descriptors or ejects its backend, and what each connection
//! costs in memory. So for each connection count and each proxy (order rotated, so a
//! drift of the machine hits all alike) the benchmark starts the proxy *fresh*, reads
//! its resident memory, loads it with that many closed-loop keep-alive connections,
//! samples its memory while they are open, and stops it. It reports requests/s, the
//! answers that were not 2xx, the socket errors (refused, reset, timed out), and the
//! memory before, at its peak, and per connection.
//!
//! The peers are configured for the load the way their documentation says: nginx with
//! `worker_connections` above the client count and 256 idle upstream connections kept
//! (the anchors' setup), HAProxy with `maxconn` as high as the file-descriptor limit
//! allows (it needs two descriptors per connection). bistro runs with its defaults,
//! except the per-address connection limit, which would see every client of a
//! single-machine load generator as one address. Memory is the sum of the resident
//! sets of the proxy's processes (nginx's master and workers), as `ps` shows it.

use super::procs::{self, Proc, TempDir, find_in_path, spawn_bistro};
use super::{LoadKind, load, peers, wrk};
use anyhow::{Context, bail};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `bistro bench connections`.
#[derive(Debug, Clone, Args)]
pub struct BenchConnectionsOpts {
    /// Concurrent keep-alive connections, comma-separated: one measurement per value
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub connections: Vec<usize>,
    /// Seconds of load per proxy and connection count
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Rounds; each figure is the median over them
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Balancer worker threads; nginx gets as many worker processes, HAProxy as many threads
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Load generator
    #[arg(long, value_enum, default_value = "builtin")]
    pub load: LoadKind,
    /// Load generator threads
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Path requested (GET)
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Leave nginx and HAProxy out even when installed
    #[arg(long)]
    pub no_peers: bool,
}

/// Descriptors kept for everything but the connections (listeners, logs, pipes).
const FD_SLACK: u64 = 256;

impl BenchConnectionsOpts {
    fn validate(&self, fd_limit: Option<u64>) -> anyhow::Result<()> {
        if self.connections.is_empty() || self.connections.iter().any(|&c| c == 0 || c > 100_000) {
            bail!("--connections takes counts from 1 to 100000");
        }
        if !(1..=600).contains(&self.seconds) || !(1..=20).contains(&self.rounds) {
            bail!("--seconds must be 1 to 600 and --rounds 1 to 20");
        }
        if !(1..=64).contains(&self.workers) || !(1..=64).contains(&self.threads) {
            bail!("--workers and --threads must be 1 to 64");
        }
        if !self.path.starts_with('/') {
            bail!("--path must start with /");
        }
        let most = self.connections.iter().max().copied().unwrap_or(0) as u64;
        if let Some(limit) = fd_limit
            && most + FD_SLACK > limit
        {
            bail!(
                "the file-descriptor limit ({limit}, the hard limit: `ulimit -Hn`) cannot hold {most} \
                 connections in the load generator; raise it or measure fewer"
            );
        }
        Ok(())
    }

    fn command(&self) -> String {
        let counts: Vec<String> = self.connections.iter().map(usize::to_string).collect();
        let load = match self.load {
            LoadKind::Builtin => "builtin",
            LoadKind::Wrk => "wrk",
        };
        format!(
            "bistro bench connections --connections {} --seconds {} --rounds {} --workers {} --load {load} --threads {} --path {}{}",
            counts.join(","),
            self.seconds,
            self.rounds,
            self.workers,
            self.threads,
            self.path,
            if self.no_peers { " --no-peers" } else { "" }
        )
    }
}

/// A proxy the benchmark can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bistro,
    Nginx,
    Haproxy,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Bistro => "bistro balancer",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone)]
struct Measured {
    kind: Kind,
    connections: usize,
    rps: f64,
    non_2xx: u64,
    socket_errors: u64,
    /// Resident memory, KiB: before the load, and the highest seen while it ran.
    rss_before: u64,
    rss_peak: u64,
}

impl Measured {
    fn per_connection_kib(&self) -> f64 {
        self.rss_peak.saturating_sub(self.rss_before) as f64 / self.connections.max(1) as f64
    }
}

/// What the measurement needs to start proxies.
struct Fleet<'a> {
    opts: &'a BenchConnectionsOpts,
    dir: &'a TempDir,
    waiter: SocketAddr,
    nginx: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    fd_limit: u64,
    key: String,
}

impl Fleet<'_> {
    /// Starts `kind` ready for `connections` clients: the process, its address, and the
    /// pids whose memory counts.
    fn start(&self, kind: Kind, connections: usize) -> anyhow::Result<(Proc, SocketAddr)> {
        let workers = self.opts.workers;
        match kind {
            Kind::Bistro => {
                let args: Vec<String> = [
                    "balancer",
                    "--listen",
                    "127.0.0.1:0",
                    "--no-admin",
                    "--sticky",
                    "off",
                    "--workers",
                    &workers.to_string(),
                    "--max-connections-per-ip",
                    "0",
                    "--backend",
                    &format!("w1={},mode=stateful", self.waiter),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                spawn_bistro("balancer", &args, &[("BISTRO_AFFINITY_KEY", &self.key)])
            }
            Kind::Nginx => {
                let bin = self.nginx.as_deref().context("nginx is not installed")?;
                let capacity = peers::Capacity {
                    keepalive: 256,
                    worker_connections: connections + 1024,
                };
                peers::start_nginx(
                    bin,
                    self.dir.path(),
                    &[self.waiter],
                    workers,
                    capacity,
                    None,
                )
            }
            Kind::Haproxy => {
                let bin = self
                    .haproxy
                    .as_deref()
                    .context("haproxy is not installed")?;
                // HAProxy sizes itself at two descriptors per connection.
                let fits = usize::try_from(self.fd_limit.saturating_sub(FD_SLACK) / 2)
                    .unwrap_or(usize::MAX);
                let maxconn = (connections + 100).min(fits);
                let backends = [("w1".to_string(), self.waiter)];
                peers::start_haproxy(
                    bin,
                    self.dir.path(),
                    &backends,
                    workers,
                    false,
                    maxconn,
                    None,
                )
            }
        }
    }

    /// Starts `kind`, loads it with `connections` clients, stops it.
    fn measure(
        &self,
        kind: Kind,
        connections: usize,
        wrk: Option<&Path>,
    ) -> anyhow::Result<Measured> {
        let (mut proc, addr) = self.start(kind, connections)?;
        let pids = || match kind {
            Kind::Nginx => procs::with_children(proc.pid()),
            _ => vec![proc.pid()],
        };
        let probe = load::probe(addr, &self.opts.path)
            .with_context(|| format!("checking {} at {addr}", kind.label()))?;
        if !probe.status.is_success() {
            bail!(
                "{} answered {} to GET {}",
                kind.label(),
                probe.status,
                self.opts.path
            );
        }
        let pids_now = pids();
        let rss_before = rss_kib(&pids_now);
        let window = Duration::from_secs(self.opts.seconds);
        let (opts, path) = (self.opts.clone(), self.opts.path.clone());
        let wrk = wrk.map(Path::to_path_buf);
        let load = std::thread::Builder::new()
            .name("bench-connections".into())
            .spawn(move || -> anyhow::Result<(f64, u64, u64)> {
                match wrk {
                    Some(wrk) => {
                        let r =
                            wrk::run(&wrk, addr, &path, opts.threads, connections, window, None)?;
                        Ok((r.rps, r.non_2xx, r.socket_errors))
                    }
                    None => {
                        let target = load::Target {
                            addr,
                            path,
                            sticky: false,
                            cookie: None,
                        };
                        let s = load::run(&target, connections, opts.threads, window)?;
                        let rps = s.requests as f64 / s.elapsed.as_secs_f64().max(1e-9);
                        Ok((rps, s.non_2xx, s.errors - s.non_2xx))
                    }
                }
            })
            .context("cannot start the load thread")?;
        // Sample the proxy's memory while the connections are open.
        let mut rss_peak = rss_before;
        let deadline = Instant::now() + window + Duration::from_secs(120);
        while !load.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            rss_peak = rss_peak.max(rss_kib(&pids()));
        }
        let outcome = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
        proc.check_alive()
            .with_context(|| format!("{} died under {connections} connections", kind.label()))?;
        proc.stop_blocking(Duration::from_secs(10));
        let (rps, non_2xx, socket_errors) = outcome?;
        Ok(Measured {
            kind,
            connections,
            rps,
            non_2xx,
            socket_errors,
            rss_before,
            rss_peak,
        })
    }
}

/// Resident memory of `pids`, KiB (a process that is gone counts 0).
fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: BenchConnectionsOpts) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(&opts))
        .await
        .context("the benchmark panicked")?
}

fn run_blocking(opts: &BenchConnectionsOpts) -> anyhow::Result<()> {
    // Thousands of client sockets in this one process: the usual soft limit of 1024
    // would fail the run, not measure it.
    if let Err(e) = bistro_balancer::raise_fd_limit() {
        eprintln!("warning: could not raise the file-descriptor limit: {e}");
    }
    let fd_limit = bistro_balancer::fd_limit().map(|l| l.soft);
    opts.validate(fd_limit)?;
    let wrk = match opts.load {
        LoadKind::Wrk => Some(find_in_path("wrk").context(
            "--load wrk: wrk is not on PATH (install it, e.g. apt-get install wrk, or use --load builtin)",
        )?),
        LoadKind::Builtin => None,
    };
    let (nginx, haproxy) = if opts.no_peers {
        (None, None)
    } else {
        (find_in_path("nginx"), find_in_path("haproxy"))
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("bistro bench connections");
    println!("command:  {}", opts.command());
    println!(
        "machine:  {cores} cores, file-descriptor limit {}, load average {}",
        fd_limit.map_or("unlimited".into(), |l| l.to_string()),
        procs::load_average()
    );
    println!(
        "load:     {} closed-loop keep-alive connections, {} thread(s), GET {}, {} s per proxy, fresh proxy each time",
        opts.connections
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        opts.threads,
        opts.path,
        opts.seconds
    );
    let mut kinds = vec![Kind::Bistro];
    for (kind, found) in [(Kind::Nginx, &nginx), (Kind::Haproxy, &haproxy)] {
        match found {
            Some(_) => kinds.push(kind),
            None if !opts.no_peers => println!(
                "note:     {} is not on PATH: its rows are skipped",
                kind.label()
            ),
            None => {}
        }
    }
    let dir = TempDir::new()?;
    let waiter_args: Vec<String> = ["waiter", "--id", "w1", "--listen", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (mut waiter, waiter_addr) = spawn_bistro("w1", &waiter_args, &[])?;
    let fleet = Fleet {
        opts,
        dir: &dir,
        waiter: waiter_addr,
        nginx,
        haproxy,
        fd_limit: fd_limit.unwrap_or(1 << 20),
        key: bistro_supervise::random_hex(),
    };
    let mut results: Vec<Measured> = Vec::new();
    let mut turn = 0;
    let outcome = (|| -> anyhow::Result<()> {
        for round in 0..opts.rounds {
            for &n in &opts.connections {
                for k in 0..kinds.len() {
                    let kind = kinds[(k + turn) % kinds.len()];
                    waiter.check_alive()?;
                    let m = fleet.measure(kind, n, wrk.as_deref()).with_context(|| {
                        format!("measuring {} at {n} connections", kind.label())
                    })?;
                    eprintln!(
                        "round {}/{} · {:>6} connections · {:<16} {:>9.0} req/s  non-2xx {:>6}  socket errors {:>6}  RSS {:.1} → {:.1} MiB",
                        round + 1,
                        opts.rounds,
                        n,
                        kind.label(),
                        m.rps,
                        m.non_2xx,
                        m.socket_errors,
                        m.rss_before as f64 / 1024.0,
                        m.rss_peak as f64 / 1024.0
                    );
                    results.push(m);
                }
                turn += 1;
            }
        }
        Ok(())
    })();
    waiter.stop_blocking(Duration::from_secs(5));
    outcome?;
    println!();
    print!("{}", table(&results, &opts.connections, &kinds));
    println!();
    for verdict in verdicts(&results, &opts.connections) {
        println!("- {verdict}");
    }
    println!(
        "\nFigures are medians over {} round(s). RSS is the resident memory of the proxy's \
         processes, summed (nginx: master and workers); per connection is (peak - before) / \
         connections.",
        opts.rounds
    );
    Ok(())
}

/// The round of `kind` at `n` connections with the median rate, with the median peak
/// memory over the rounds.
fn median(results: &[Measured], kind: Kind, n: usize) -> Option<Measured> {
    let mut rows: Vec<&Measured> = results
        .iter()
        .filter(|m| m.kind == kind && m.connections == n)
        .collect();
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let mid = rows[rows.len() / 2];
    let mut peaks: Vec<u64> = rows.iter().map(|m| m.rss_peak).collect();
    peaks.sort_unstable();
    Some(Measured {
        rss_peak: peaks[peaks.len() / 2],
        ..mid.clone()
    })
}

fn table(results: &[Measured], counts: &[usize], kinds: &[Kind]) -> String {
    let mut out = String::from(
        "| connections | proxy | req/s | non-2xx | socket errors | RSS before → peak (MiB) | per connection (KiB) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for &n in counts {
        for &kind in kinds {
            if let Some(m) = median(results, kind, n) {
                out.push_str(&format!(
                    "| {n} | {} | {:.0} | {} | {} | {:.1} → {:.1} | {:.1} |\n",
                    kind.label(),
                    m.rps,
                    m.non_2xx,
                    m.socket_errors,
                    m.rss_before as f64 / 1024.0,
                    m.rss_peak as f64 / 1024.0,
                    m.per_connection_kib()
                ));
            }
        }
    }
    out
}

/// The goals at the largest count: no errors, memory no more than nginx's, requests/s
/// at least the better peer's.
fn verdicts(results: &[Measured], counts: &[usize]) -> Vec<String> {
    let Some(&n) = counts.iter().max() else {
        return Vec::new();
    };
    let Some(bistro) = median(results, Kind::Bistro, n) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let errors = bistro.non_2xx + bistro.socket_errors;
    out.push(format!(
        "{} errors at {n} connections (goal 0): {}",
        errors,
        if errors == 0 { "met" } else { "not met" }
    ));
    if let Some(nginx) = median(results, Kind::Nginx, n) {
        let ratio = bistro.rss_peak as f64 / nginx.rss_peak.max(1) as f64;
        out.push(format!(
            "RSS at {n} connections {:.1} MiB, {ratio:.2}× nginx's {:.1} MiB (goal ≤ 1.00×): {}",
            bistro.rss_peak as f64 / 1024.0,
            nginx.rss_peak as f64 / 1024.0,
            if ratio <= 1.0 { "met" } else { "not met" }
        ));
    }
    let best = [Kind::Nginx, Kind::Haproxy]
        .into_iter()
        .filter_map(|k| median(results, k, n))
        .max_by(|a, b| a.rps.total_cmp(&b.rps));
    if let Some(best) = best {
        let ratio = bistro.rps / best.rps.max(1e-9);
        out.push(format!(
            "requests/s at {n} connections {:.0}, {ratio:.2}× the better peer ({}, {:.0}) (goal ≥ 1.00×): {}",
            bistro.rps,
            best.kind.label(),
            best.rps,
            if ratio >= 1.0 { "met" } else { "not met" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: Kind, rps: f64, errors: u64, before: u64, peak: u64) -> Measured {
        Measured {
            kind,
            connections: 10_000,
            rps,
            non_2xx: errors,
            socket_errors: 0,
            rss_before: before,
            rss_peak: peak,
        }
    }

    #[test]
    fn verdicts_compare_with_nginx_memory_and_the_better_peers_rate() {
        let results = vec![
            m(Kind::Bistro, 15_000.0, 0, 20_000, 200_000),
            m(Kind::Nginx, 9_000.0, 0, 38_000, 130_000),
            m(Kind::Haproxy, 4_700.0, 0, 15_000, 100_000),
        ];
        let v = verdicts(&results, &[1_000, 10_000]);
        assert!(
            v[0].starts_with("0 errors at 10000 connections (goal 0): met"),
            "{v:?}"
        );
        assert!(
            v[1].contains("1.54× nginx's") && v[1].ends_with("not met"),
            "{v:?}"
        );
        assert!(
            v[2].contains("1.67× the better peer (nginx") && v[2].ends_with(": met"),
            "{v:?}"
        );
        assert_eq!(results[0].per_connection_kib(), 18.0);
        let t = table(&results, &[10_000], &[Kind::Bistro, Kind::Nginx]);
        assert!(
            t.contains("| 10000 | bistro balancer | 15000 | 0 | 0 | 19.5 → 195.3 | 18.0 |"),
            "{t}"
        );
    }

    #[test]
    fn options_are_checked_against_the_descriptor_limit() {
        let opts = BenchConnectionsOpts {
            connections: vec![1_000, 10_000],
            seconds: 8,
            rounds: 1,
            workers: 2,
            load: LoadKind::Builtin,
            threads: 2,
            path: "/healthz".into(),
            no_peers: false,
        };
        assert!(opts.validate(Some(20_000)).is_ok());
        let err = opts.validate(Some(4_096)).unwrap_err().to_string();
        assert!(err.contains("cannot hold 10000"), "{err}");
        assert_eq!(
            opts.command(),
            "bistro bench connections --connections 1000,10000 --seconds 8 --rounds 1 --workers 2 --load builtin --threads 2 --path /healthz"
        );
    }
}
