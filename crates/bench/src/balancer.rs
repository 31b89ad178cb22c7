//! `bistro bench balancer`: the balancer against a waiter alone, nginx and HAProxy, in
//! one run.
//!
//! A proxy's speed only means something next to a baseline measured on the same
//! machine at the same time: absolute figures drift ±10% between runs, and on a shared
//! two-core machine far more. So one invocation starts everything — three stateful
//! waiters (`bistro waiter`, child processes), bistro's balancer twice (round robin with
//! stickiness off; sticky cookies on), and, where installed, nginx and HAProxy (round
//! robin, and HAProxy with its own sticky cookie) — and loads each setup with the same
//! generator, in interleaved rounds (round 1 of every setup, then round 2, ..., the
//! order rotated each round), so slow drifts of the machine hit all setups alike. The
//! report gives medians over the rounds, ratios to the direct baseline and to the better
//! peer, and each proxy's CPU time per request (from `/proc`, the steadier figure: the
//! request rate mostly shows how the scheduler split two cores between load generator,
//! proxy and waiters).
//!
//! The request is `GET /healthz` by default: the cheapest thing a waiter answers (no
//! store, no session, an 18-byte body), so as much of the machine as possible goes to
//! the proxies, whose overhead is what is being measured. `--path` picks another.
//!
//! Everything runs on 127.0.0.1 with ports picked at run time; configurations, pid
//! files and logs live in a temporary directory; every process is stopped at the end,
//! on error too (see `procs`). Every loop is bounded in time. Linux only (`/proc`).
//!
//! Modules: `load` (the built-in load generator), `wrk` (wrk instead), `peers`
//! (nginx and HAProxy configurations), `procs` (child processes, CPU time),
//! `report` (medians, ratios, verdicts), `connections`: `bistro bench
//! connections`, thousands of clients at once, errors and memory, and `tls`: `bistro
//! bench tls`, TLS handshakes and requests against nginx and HAProxy.

mod connections;
mod load;
mod peers;
mod procs;
mod report;
mod tls;
mod waiter;
mod wrk;

pub use connections::{BenchConnectionsOpts, run as run_connections};
pub use tls::{BenchTlsOpts, run as run_tls};
pub use waiter::{BaselineOpts, BenchWaiterOpts, baseline, run as run_waiter};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use procs::{Proc, TempDir, find_in_path, spawn_bistro};
use report::{Role, Round, Row};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Waiters behind each proxy.
const WAITERS: usize = 3;

/// Which load generator drives the setups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadKind {
    /// The built-in closed-loop hyper client (always available)
    Builtin,
    /// wrk, when installed
    Wrk,
}

/// What stands behind the proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Three stateful `bistro waiter`s: the proxies as deployed
    Waiter,
    /// Three minimal axum servers answering fixed bytes (`bistro bench baseline`): far
    /// cheaper than a waiter, so the proxy is the bottleneck
    Trivial,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Waiter => "waiter",
            BackendKind::Trivial => "trivial",
        }
    }
}

/// Options of `bistro bench balancer`.
#[derive(Debug, Clone, Args)]
pub struct BenchBalancerOpts {
    /// Concurrent keep-alive client connections
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of load per setup and round
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each figure is the median over them
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Balancer worker threads; nginx gets as many worker processes, HAProxy as many threads
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Load generator
    #[arg(long, value_enum, default_value = "builtin")]
    pub load: LoadKind,
    /// Load generator threads (wrk's -t)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Path requested (GET)
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Seconds of unrecorded warm-up per setup before the first round (0 for none)
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Leave nginx and HAProxy out even when installed
    #[arg(long)]
    pub no_peers: bool,
    /// What stands behind the proxies
    #[arg(long, value_enum, default_value = "waiter")]
    pub backend: BackendKind,
}

impl BenchBalancerOpts {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=10_000).contains(&self.connections) {
            bail!("--connections must be 1 to 10000");
        }
        if !(1..=600).contains(&self.seconds) || self.warmup > 60 {
            bail!("--seconds must be 1 to 600 and --warmup at most 60");
        }
        if !(1..=20).contains(&self.rounds) {
            bail!("--rounds must be 1 to 20");
        }
        if !(1..=64).contains(&self.workers) {
            bail!("--workers must be 1 to 64");
        }
        if self.threads == 0 || self.threads > self.connections.min(64) {
            bail!("--threads must be 1 to 64 and at most --connections");
        }
        if !self.path.starts_with('/') {
            bail!("--path must start with /");
        }
        Ok(())
    }

    /// The command line that repeats this run, every option spelled out.
    fn command(&self) -> String {
        let load = match self.load {
            LoadKind::Builtin => "builtin",
            LoadKind::Wrk => "wrk",
        };
        format!(
            "bistro bench balancer --backend {} --connections {} --seconds {} --rounds {} --workers {} --load {load} --threads {} --path {} --warmup {}{}",
            self.backend.name(),
            self.connections,
            self.seconds,
            self.rounds,
            self.workers,
            self.threads,
            self.path,
            self.warmup,
            if self.no_peers { " --no-peers" } else { "" }
        )
    }
}

/// One thing to measure.
#[derive(Debug)]
struct Setup {
    label: String,
    role: Role,
    addr: SocketAddr,
    sticky: bool,
    /// The proxy's process (none for direct), and whether its work happens in child
    /// processes too (nginx's workers).
    proxy: Option<(u32, bool)>,
    /// wrk's cookie script for a sticky setup.
    script: Option<PathBuf>,
}

impl Setup {
    fn pids(&self) -> Vec<u32> {
        match self.proxy {
            None => Vec::new(),
            Some((pid, false)) => vec![pid],
            Some((pid, true)) => procs::with_children(pid),
        }
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: BenchBalancerOpts) -> anyhow::Result<()> {
    opts.validate()?;
    // Blocking from here on: child processes, load threads, sleeps.
    tokio::task::spawn_blocking(move || run_blocking(&opts))
        .await
        .context("the benchmark panicked")?
}

fn run_blocking(opts: &BenchBalancerOpts) -> anyhow::Result<()> {
    let wrk = match opts.load {
        LoadKind::Wrk => Some(find_in_path("wrk").context(
            "--load wrk: wrk is not on PATH (install it, e.g. apt-get install wrk, or use --load builtin)",
        )?),
        LoadKind::Builtin => None,
    };
    let (nginx, haproxy) = procs::find_peers(opts.no_peers);
    procs::print_header("bistro bench balancer", &opts.command());
    println!(
        "load:     {} connections, {} thread(s), GET {}, {} round(s) of {} s per setup, interleaved",
        opts.connections, opts.threads, opts.path, opts.rounds, opts.seconds
    );
    let load_name = match &wrk {
        Some(w) => procs::version_line(w, &["--version"], "wrk"),
        None => "built-in (hyper http1, closed loop, keep-alive)".into(),
    };
    println!("generator: {load_name}");
    println!(
        "backends: {}",
        match opts.backend {
            BackendKind::Waiter => "3 stateful bistro waiters",
            BackendKind::Trivial =>
                "3 trivial servers (minimal axum, fixed bytes): the proxy is the bottleneck",
        }
    );

    let dir = TempDir::new()?;
    let mut fleet: Vec<Proc> = Vec::new();
    let result = bench(opts, &dir, &mut fleet, wrk.as_deref(), nginx, haproxy);
    // Proxies first, then the waiters behind them.
    for proc in fleet.iter_mut().rev() {
        proc.stop_blocking(Duration::from_secs(5));
    }
    let rows = result?;
    println!(
        "\nmachine load average {} at the end\n",
        procs::load_average()
    );
    print!("{}", report::table(&rows));
    println!();
    for verdict in report::verdicts(&rows) {
        println!("- {verdict}");
    }
    println!(
        "\nFigures are medians over {} round(s). Proxy CPU is user + system time of the proxy's \
         processes during a round, divided by the requests served in it (\"of it user\": the part \
         spent outside the kernel); load gen CPU is the same for the built-in generator's threads.",
        opts.rounds
    );
    Ok(())
}

/// Starts the fleet (into `fleet`, which the caller stops), measures, returns the rows.
fn bench(
    opts: &BenchBalancerOpts,
    dir: &TempDir,
    fleet: &mut Vec<Proc>,
    wrk: Option<&Path>,
    nginx: Option<PathBuf>,
    haproxy: Option<PathBuf>,
) -> anyhow::Result<Vec<Row>> {
    let mut waiters: Vec<(String, SocketAddr)> = Vec::new();
    let body = dir.path().join("order.json");
    if opts.backend == BackendKind::Trivial {
        std::fs::write(&body, br#"{"id":"trivial"}"#).context("writing the trivial body")?;
    }
    for i in 1..=WAITERS {
        let id = format!("w{i}");
        let args = match opts.backend {
            BackendKind::Waiter => strings(&[
                "waiter",
                "--id",
                &id,
                "--listen",
                "127.0.0.1:0",
                "--mode",
                "stateful",
            ]),
            BackendKind::Trivial => strings(&[
                "bench",
                "baseline",
                "--listen",
                "127.0.0.1:0",
                "--order-json",
                &body.to_string_lossy(),
            ]),
        };
        let (proc, addr) = spawn_bistro(&id, &args, &[])?;
        fleet.push(proc);
        waiters.push((id, addr));
    }
    let addrs: Vec<SocketAddr> = waiters.iter().map(|(_, a)| *a).collect();
    let mut setups = vec![Setup {
        label: format!("direct to {} {}", opts.backend.name(), waiters[0].0),
        role: Role::Direct,
        addr: waiters[0].1,
        sticky: false,
        proxy: None,
        script: None,
    }];

    let key = bistro_supervise::random_hex();
    for sticky in [false, true] {
        let mut args = strings(&[
            "balancer",
            "--listen",
            "127.0.0.1:0",
            "--no-admin",
            "--strategy",
            "round-robin",
            "--sticky",
            if sticky { "on" } else { "off" },
            "--workers",
            &opts.workers.to_string(),
        ]);
        for (id, addr) in &waiters {
            args.extend(strings(&[
                "--backend",
                &format!("{id}={addr},mode=stateful"),
            ]));
        }
        let name = if sticky {
            "balancer-sticky"
        } else {
            "balancer"
        };
        let (proc, addr) = spawn_bistro(name, &args, &[("BISTRO_AFFINITY_KEY", &key)])?;
        setups.push(Setup {
            label: if sticky {
                "bistro balancer, sticky cookie".into()
            } else {
                "bistro balancer, round robin".into()
            },
            role: Role::Bistro { sticky },
            addr,
            sticky,
            proxy: Some((proc.pid(), false)),
            script: None,
        });
        fleet.push(proc);
    }

    match &nginx {
        Some(bin) => {
            let version = short_version(&procs::version_line(bin, &["-v"], "nginx"), "nginx/");
            let (proc, addr) = peers::start_nginx(
                bin,
                dir.path(),
                &addrs,
                opts.workers,
                peers::Capacity::for_clients(opts.connections),
                None,
            )?;
            setups.push(Setup {
                label: format!("nginx {version}, round robin"),
                role: Role::Peer,
                addr,
                sticky: false,
                proxy: Some((proc.pid(), true)),
                script: None,
            });
            fleet.push(proc);
        }
        None if !opts.no_peers => println!("note:     nginx is not on PATH: its row is skipped"),
        None => {}
    }
    match &haproxy {
        Some(bin) => {
            let line = procs::version_line(bin, &["-v"], "version");
            let version = short_version(&line, "version ");
            for sticky in [false, true] {
                let (proc, addr) = peers::start_haproxy(
                    bin,
                    dir.path(),
                    &waiters,
                    opts.workers,
                    sticky,
                    4096,
                    None,
                )?;
                setups.push(Setup {
                    label: if sticky {
                        format!("HAProxy {version}, sticky cookie")
                    } else {
                        format!("HAProxy {version}, round robin")
                    },
                    role: Role::Peer,
                    addr,
                    sticky,
                    proxy: Some((proc.pid(), false)),
                    script: None,
                });
                fleet.push(proc);
            }
        }
        None if !opts.no_peers => {
            println!("note:     haproxy is not on PATH: its rows are skipped")
        }
        None => {}
    }

    for setup in &mut setups {
        check(setup, opts, dir.path(), wrk.is_some())?;
    }
    if opts.warmup > 0 {
        for setup in &setups {
            measure(setup, opts, wrk, Duration::from_secs(opts.warmup))
                .with_context(|| format!("warming up {}", setup.label))?;
        }
    }
    let mut rows: Vec<Row> = setups
        .iter()
        .map(|s| Row {
            label: s.label.clone(),
            role: s.role,
            rounds: Vec::new(),
        })
        .collect();
    let window = Duration::from_secs(opts.seconds);
    for round in 0..opts.rounds {
        for k in 0..setups.len() {
            let i = (k + round) % setups.len();
            let setup = &setups[i];
            for proc in fleet.iter_mut() {
                proc.check_alive()?;
            }
            let measured = measure(setup, opts, wrk, window)
                .with_context(|| format!("measuring {}", setup.label))?;
            eprintln!(
                "round {}/{} · {:<34} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms{}{}",
                round + 1,
                opts.rounds,
                setup.label,
                measured.rps,
                measured.p50_ms,
                measured.p99_ms,
                measured
                    .cpu_us
                    .map_or_else(String::new, |c| format!("  proxy {c:.1} µs CPU/req")),
                if measured.errors > 0 {
                    format!("  {} errors", measured.errors)
                } else {
                    String::new()
                }
            );
            rows[i].rounds.push(measured);
        }
    }
    Ok(rows)
}

/// One request to each setup before measuring: it must answer 2xx, and a sticky setup
/// must set a cookie. For wrk, a sticky setup also gets its cookie script.
fn check(setup: &mut Setup, opts: &BenchBalancerOpts, dir: &Path, wrk: bool) -> anyhow::Result<()> {
    let probe = load::probe(setup.addr, &opts.path)
        .with_context(|| format!("checking {} at {}", setup.label, setup.addr))?;
    if !probe.status.is_success() {
        bail!(
            "{} answered {} to GET {}: pick a --path every waiter answers with 2xx",
            setup.label,
            probe.status,
            opts.path
        );
    }
    if !setup.sticky {
        return Ok(());
    }
    if probe.cookie.is_none() {
        bail!("{} set no cookie: it is not sticky", setup.label);
    }
    if !wrk {
        return Ok(());
    }
    // One cookie per backend, from first answers on fresh connections.
    let mut cookies: Vec<(String, String)> = Vec::new();
    for _ in 0..WAITERS * 10 {
        if cookies.len() == WAITERS {
            break;
        }
        let p = load::probe(setup.addr, &opts.path)?;
        if let (Some(waiter), Some(cookie)) = (p.waiter, p.cookie)
            && !cookies.iter().any(|(w, _)| *w == waiter)
        {
            cookies.push((waiter, cookie));
        }
    }
    if cookies.len() < WAITERS {
        println!(
            "note:     {} pinned fresh clients to only {} of {WAITERS} waiters; wrk uses those cookies",
            setup.label,
            cookies.len()
        );
    }
    let cookies: Vec<String> = cookies.into_iter().map(|(_, c)| c).collect();
    let script = dir.join(format!("cookies-{}.lua", setup.addr.port()));
    std::fs::write(&script, wrk::cookie_script(&cookies))?;
    setup.script = Some(script);
    Ok(())
}

/// Loads one setup for `window` and reads the proxy's CPU time around it.
fn measure(
    setup: &Setup,
    opts: &BenchBalancerOpts,
    wrk: Option<&Path>,
    window: Duration,
) -> anyhow::Result<Round> {
    let pids = setup.pids();
    let cpu_before = procs::cpu_time(&pids)?;
    let mut round = match wrk {
        Some(wrk) => {
            let r = wrk::run(
                wrk,
                setup.addr,
                &opts.path,
                opts.threads,
                opts.connections,
                window,
                setup.script.as_deref(),
            )?;
            Round {
                rps: r.rps,
                p50_ms: r.p50_ms,
                p99_ms: r.p99_ms,
                requests: r.requests,
                errors: r.errors,
                cpu_us: None,
                user_us: None,
                load_cpu_us: None,
            }
        }
        None => {
            let target = load::Target {
                addr: setup.addr,
                path: opts.path.clone(),
                sticky: setup.sticky,
                cookie: None,
            };
            let s = load::run(&target, opts.connections, opts.threads, window)?;
            Round {
                rps: s.requests as f64 / s.elapsed.as_secs_f64().max(1e-9),
                p50_ms: s.latency.value_at_quantile(0.50) as f64 / 1000.0,
                p99_ms: s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                requests: s.requests,
                errors: s.errors,
                cpu_us: None,
                user_us: None,
                load_cpu_us: Some(s.cpu.as_secs_f64() * 1e6 / s.requests.max(1) as f64),
            }
        }
    };
    if !pids.is_empty() {
        let spent = procs::cpu_time(&pids)?.since(cpu_before);
        let per_request = |d: Duration| d.as_secs_f64() * 1e6 / round.requests.max(1) as f64;
        round.cpu_us = Some(per_request(spent.total()));
        round.user_us = Some(per_request(spent.user));
    }
    Ok(round)
}

/// `1.22.1` from `nginx version: nginx/1.22.1` (after `marker`, up to a space or `-`).
fn short_version(line: &str, marker: &str) -> String {
    line.find(marker)
        .map(|i| &line[i + marker.len()..])
        .and_then(|rest| rest.split([' ', '-']).next())
        .filter(|v| !v.is_empty())
        .unwrap_or("(version unknown)")
        .to_string()
}

pub(super) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_shortened() {
        assert_eq!(
            short_version("nginx version: nginx/1.22.1", "nginx/"),
            "1.22.1"
        );
        assert_eq!(
            short_version(
                "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/",
                "version "
            ),
            "2.6.12"
        );
        assert_eq!(short_version("garbage", "nginx/"), "(version unknown)");
    }

    #[test]
    fn the_printed_command_spells_out_every_option() {
        let opts = BenchBalancerOpts {
            connections: 64,
            seconds: 5,
            rounds: 3,
            workers: 2,
            load: LoadKind::Builtin,
            threads: 1,
            path: "/healthz".into(),
            warmup: 1,
            no_peers: false,
            backend: BackendKind::Trivial,
        };
        assert!(opts.validate().is_ok());
        assert_eq!(
            opts.command(),
            "bistro bench balancer --backend trivial --connections 64 --seconds 5 --rounds 3 --workers 2 --load builtin --threads 1 --path /healthz --warmup 1"
        );
        let bad = BenchBalancerOpts {
            threads: 65,
            ..opts
        };
        assert!(bad.validate().is_err());
    }
}
