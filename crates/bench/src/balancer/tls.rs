//! `bistro bench tls`: TLS termination, bistro's balancer against nginx and HAProxy with
//! the same certificate, in one run.
//!
//! Two loads per setup, in interleaved rounds like `bench balancer`:
//!
//! - **new connections**: `--clients` clients each open a connection, complete a full
//!   TLS handshake (no session resumption: the expensive case, a diner's first visit),
//!   send one `GET`, read the answer and reset the connection (no `TIME_WAIT` piles up
//!   on loopback). The figure is handshakes per second and the proxy's CPU time per
//!   handshake.
//! - **keep-alive requests**: `--connections` TLS connections opened before the clock,
//!   each sending its next `GET` when the last answer ended (a closed loop): requests
//!   per second, p50/p99, and CPU per request.
//!
//! The certificate is one ECDSA P-256 loopback certificate (`bistro up --tls`'s kind),
//! served by all three; every server offers h2 and http/1.1 by ALPN and the client asks
//! for http/1.1, so all three speak the same protocol to the client and to the waiters.
//! The client is rustls (TLS 1.3, X25519), one thread, as lean as the generator of
//! `bench balancer`: it writes the request bytes and reads the answer by its
//! `Content-Length`.

use super::peers::{self, PeerTls};
use super::procs::{self, Proc, TempDir, spawn_bistro};
use super::{WAITERS, strings};
use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one connection or exchange may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `bistro bench tls`.
#[derive(Debug, Clone, Args)]
pub struct BenchTlsOpts {
    /// Concurrent keep-alive TLS connections for the requests/s load
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Concurrent clients opening new TLS connections for the handshakes/s load
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of each load per setup and round
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each figure is the median over them
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Balancer worker threads; nginx gets as many worker processes, HAProxy as many threads
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Path requested (GET)
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Leave nginx and HAProxy out even when installed
    #[arg(long)]
    pub no_peers: bool,
}

impl BenchTlsOpts {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=10_000).contains(&self.connections) || !(1..=1_000).contains(&self.clients) {
            bail!("--connections must be 1 to 10000 and --clients 1 to 1000");
        }
        if !(1..=600).contains(&self.seconds) || !(1..=20).contains(&self.rounds) {
            bail!("--seconds must be 1 to 600 and --rounds 1 to 20");
        }
        if !(1..=64).contains(&self.workers) {
            bail!("--workers must be 1 to 64");
        }
        if !self.path.starts_with('/') || self.path.contains(char::is_whitespace) {
            bail!("--path must start with / and hold no spaces");
        }
        Ok(())
    }

    fn command(&self) -> String {
        format!(
            "bistro bench tls --connections {} --clients {} --seconds {} --rounds {} --workers {} --path {}{}",
            self.connections,
            self.clients,
            self.seconds,
            self.rounds,
            self.workers,
            self.path,
            if self.no_peers { " --no-peers" } else { "" }
        )
    }
}

/// One TLS server to measure.
struct Setup {
    label: String,
    bistro: bool,
    addr: SocketAddr,
    pids: Vec<u32>,
}

/// One round of one setup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Round {
    handshakes_per_sec: f64,
    cpu_us_per_handshake: f64,
    handshake_errors: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
    request_errors: u64,
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: BenchTlsOpts) -> anyhow::Result<()> {
    opts.validate()?;
    tokio::task::spawn_blocking(move || run_blocking(&opts))
        .await
        .context("the benchmark panicked")?
}

fn run_blocking(opts: &BenchTlsOpts) -> anyhow::Result<()> {
    let (nginx, haproxy) = procs::find_peers(opts.no_peers);
    procs::print_header("bistro bench tls", &opts.command());
    println!(
        "load:     new connections from {} clients (full handshake, one GET {} each), then {} keep-alive TLS connections; {} round(s) of {} s each, interleaved",
        opts.clients, opts.path, opts.connections, opts.rounds, opts.seconds
    );
    println!("client:   rustls, TLS 1.3, ALPN http/1.1, no resumption, one thread");
    let dir = TempDir::new()?;
    let certs = bistro_balancer::write_loopback_certs(&dir.path().join("tls"))
        .context("making the benchmark's certificate")?;
    let combined = dir.path().join("tls").join("combined.pem");
    std::fs::write(
        &combined,
        format!(
            "{}{}",
            std::fs::read_to_string(&certs.cert)?,
            std::fs::read_to_string(&certs.key)?
        ),
    )?;
    let peer_tls = PeerTls {
        cert: certs.cert.clone(),
        key: certs.key.clone(),
        combined,
    };
    println!("certificate: ECDSA P-256 for localhost, one CA, the same files for every server");
    let client = Arc::new(client_config(&certs)?);
    let mut fleet: Vec<Proc> = Vec::new();
    let result = bench(
        opts, &dir, &mut fleet, &certs, &peer_tls, &client, nginx, haproxy,
    );
    for proc in fleet.iter_mut().rev() {
        proc.stop_blocking(Duration::from_secs(5));
    }
    let rows = result?;
    println!(
        "\nmachine load average {} at the end\n",
        procs::load_average()
    );
    print!("{}", table(&rows));
    println!();
    for line in verdicts(&rows) {
        println!("- {line}");
    }
    println!(
        "\nFigures are medians over {} round(s). CPU is user + system time of the server's \
         processes during a load, divided by the handshakes (or requests) it completed.",
        opts.rounds
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    opts: &BenchTlsOpts,
    dir: &TempDir,
    fleet: &mut Vec<Proc>,
    certs: &bistro_balancer::LoopbackCerts,
    peer_tls: &PeerTls,
    client: &Arc<rustls::ClientConfig>,
    nginx: Option<std::path::PathBuf>,
    haproxy: Option<std::path::PathBuf>,
) -> anyhow::Result<Vec<(String, bool, Vec<Round>)>> {
    let mut waiters: Vec<(String, SocketAddr)> = Vec::new();
    for i in 1..=WAITERS {
        let id = format!("w{i}");
        let args = strings(&["waiter", "--id", &id, "--listen", "127.0.0.1:0"]);
        let (proc, addr) = spawn_bistro(&id, &args, &[])?;
        fleet.push(proc);
        waiters.push((id, addr));
    }
    let addrs: Vec<SocketAddr> = waiters.iter().map(|(_, a)| *a).collect();
    let mut setups = Vec::new();

    let mut args = strings(&[
        "balancer",
        "--listen",
        "127.0.0.1:0",
        "--no-admin",
        "--strategy",
        "round-robin",
        "--sticky",
        "off",
        "--workers",
        &opts.workers.to_string(),
        "--tls-cert",
        &certs.cert.display().to_string(),
        "--tls-key",
        &certs.key.display().to_string(),
    ]);
    for (id, addr) in &waiters {
        args.extend(strings(&[
            "--backend",
            &format!("{id}={addr},mode=stateful"),
        ]));
    }
    let key = bistro_supervise::random_hex();
    let (proc, addr) = spawn_bistro("balancer", &args, &[("BISTRO_AFFINITY_KEY", &key)])?;
    setups.push(Setup {
        label: "bistro balancer (rustls, ring)".into(),
        bistro: true,
        addr,
        pids: vec![proc.pid()],
    });
    fleet.push(proc);

    match &nginx {
        Some(bin) => {
            let version =
                super::short_version(&procs::version_line(bin, &["-v"], "nginx"), "nginx/");
            let (proc, addr) = peers::start_nginx(
                bin,
                dir.path(),
                &addrs,
                opts.workers,
                peers::Capacity::for_clients(opts.connections.max(opts.clients)),
                Some(peer_tls),
            )?;
            setups.push(Setup {
                label: format!("nginx {version} (OpenSSL)"),
                bistro: false,
                addr,
                pids: procs::with_children(proc.pid()),
            });
            fleet.push(proc);
        }
        None if !opts.no_peers => println!("note:     nginx is not on PATH: its row is skipped"),
        None => {}
    }
    match &haproxy {
        Some(bin) => {
            let line = procs::version_line(bin, &["-v"], "version");
            let version = super::short_version(&line, "version ");
            let (proc, addr) = peers::start_haproxy(
                bin,
                dir.path(),
                &waiters,
                opts.workers,
                false,
                4096 + opts.connections,
                Some(peer_tls),
            )?;
            setups.push(Setup {
                label: format!("HAProxy {version} (OpenSSL)"),
                bistro: false,
                addr,
                pids: vec![proc.pid()],
            });
            fleet.push(proc);
        }
        None if !opts.no_peers => println!("note:     haproxy is not on PATH: its row is skipped"),
        None => {}
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the load runtime")?;
    let request = format!("GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", opts.path);
    for setup in &setups {
        let status = runtime
            .block_on(one_request(setup.addr, client.clone(), request.as_bytes()))
            .with_context(|| format!("checking {} at {}", setup.label, setup.addr))?;
        if !(200..300).contains(&status) {
            bail!(
                "{} answered {status} to GET {}: pick a --path every waiter answers with 2xx",
                setup.label,
                opts.path
            );
        }
    }
    let window = Duration::from_secs(opts.seconds);
    let mut rows: Vec<(String, bool, Vec<Round>)> = setups
        .iter()
        .map(|s| (s.label.clone(), s.bistro, Vec::new()))
        .collect();
    for round in 0..opts.rounds {
        for k in 0..setups.len() {
            let i = (k + round) % setups.len();
            let setup = &setups[i];
            for proc in fleet.iter_mut() {
                proc.check_alive()?;
            }
            let before = procs::cpu_time(&setup.pids)?;
            let (handshakes, handshake_errors, elapsed) = runtime.block_on(new_connections(
                setup.addr,
                client.clone(),
                request.as_bytes(),
                opts.clients,
                window,
            ));
            let handshake_cpu = procs::cpu_time(&setup.pids)?.since(before).total();
            let before = procs::cpu_time(&setup.pids)?;
            let keep_alive = runtime
                .block_on(keep_alive(
                    setup.addr,
                    client.clone(),
                    request.as_bytes(),
                    opts.connections,
                    window,
                ))
                .with_context(|| format!("opening keep-alive connections to {}", setup.label))?;
            let request_cpu = procs::cpu_time(&setup.pids)?.since(before).total();
            let per = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
            let measured = Round {
                handshakes_per_sec: handshakes as f64 / elapsed.as_secs_f64().max(1e-9),
                cpu_us_per_handshake: per(handshake_cpu, handshakes),
                handshake_errors,
                rps: keep_alive.requests as f64 / keep_alive.elapsed.as_secs_f64().max(1e-9),
                p50_ms: keep_alive.latency.value_at_quantile(0.50) as f64 / 1000.0,
                p99_ms: keep_alive.latency.value_at_quantile(0.99) as f64 / 1000.0,
                cpu_us_per_request: per(request_cpu, keep_alive.requests),
                request_errors: keep_alive.errors,
            };
            eprintln!(
                "round {}/{} · {:<30} {:>7.0} handshakes/s ({:>5.1} µs CPU each) {:>8.0} req/s  p99 {:>6.2} ms ({:>5.1} µs CPU/req){}",
                round + 1,
                opts.rounds,
                setup.label,
                measured.handshakes_per_sec,
                measured.cpu_us_per_handshake,
                measured.rps,
                measured.p99_ms,
                measured.cpu_us_per_request,
                if handshake_errors + keep_alive.errors > 0 {
                    format!("  {} errors", handshake_errors + keep_alive.errors)
                } else {
                    String::new()
                }
            );
            rows[i].2.push(measured);
        }
    }
    Ok(rows)
}

/// The benchmark client: trusts the benchmark's CA only, asks for http/1.1, never
/// resumes a session (every new connection pays a full handshake).
fn client_config(certs: &bistro_balancer::LoopbackCerts) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = certs.client_config(&[b"http/1.1"])?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

async fn connect(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    // Closing resets: no TIME_WAIT left per connection, so the loopback's ports last.
    socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO))?;
    let name = ServerName::try_from("localhost").expect("a valid name");
    tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
}

async fn one_request(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> anyhow::Result<u16> {
    let mut stream = tokio::time::timeout(TIMEOUT, connect(addr, client))
        .await
        .context("the handshake timed out")??;
    let mut buf = Vec::new();
    let status = tokio::time::timeout(TIMEOUT, exchange(&mut stream, request, &mut buf))
        .await
        .context("the request timed out")??;
    Ok(status)
}

/// Writes `request` and reads one answer by its `Content-Length`; its status.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((status, end, length)) = parse_head(buf)? {
            while buf.len() < end + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A complete response head in `buf`: (status, where the body starts, its length).
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(u16, usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("a head that is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| bad("an answer without Content-Length"))?;
    Ok(Some((status, end + 4, length)))
}

/// `clients` loops of connect, handshake, one request, reset, for `window`: (completed,
/// failed, elapsed).
async fn new_connections(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    request: &[u8],
    clients: usize,
    window: Duration,
) -> (u64, u64, Duration) {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, request) = (client.clone(), request.to_vec());
        tasks.spawn(async move {
            let (mut done, mut failed) = (0u64, 0u64);
            let mut buf = Vec::with_capacity(1024);
            while Instant::now() < deadline {
                let attempt = async {
                    let mut stream = connect(addr, client.clone()).await?;
                    exchange(&mut stream, &request, &mut buf).await
                };
                match tokio::time::timeout(TIMEOUT, attempt).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => done += 1,
                    _ => failed += 1,
                }
            }
            (done, failed)
        });
    }
    let (mut done, mut failed) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((d, f)) => {
                done += d;
                failed += f;
            }
            Err(_) => failed += 1,
        }
    }
    (done, failed, started.elapsed())
}

/// What the keep-alive load measured.
struct KeepAlive {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// `connections` TLS connections (opened first), each a closed loop for `window`.
async fn keep_alive(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    request: &[u8],
    connections: usize,
    window: Duration,
) -> anyhow::Result<KeepAlive> {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(
            tokio::time::timeout(TIMEOUT, connect(addr, client.clone()))
                .await
                .context("a handshake timed out")??,
        );
    }
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        let request = request.to_vec();
        tasks.spawn(async move {
            let mut latency = histogram();
            let (mut done, mut failed) = (0u64, 0u64);
            let mut buf = Vec::with_capacity(1024);
            while Instant::now() < deadline {
                let sent = Instant::now();
                match tokio::time::timeout(TIMEOUT, exchange(&mut stream, &request, &mut buf)).await
                {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        done += 1;
                        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        latency.saturating_record(micros.max(1));
                    }
                    // A broken connection ends this client's loop: counted, not retried.
                    Ok(Err(_)) | Err(_) => {
                        failed += 1;
                        break;
                    }
                    Ok(Ok(_)) => failed += 1,
                }
            }
            (done, failed, latency)
        });
    }
    let mut total = KeepAlive {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (done, failed, latency) = joined.context("a load connection panicked")?;
        total.requests += done;
        total.errors += failed;
        total.latency.add(&latency).context("merging histograms")?;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians of one row's rounds.
fn summary(rounds: &[Round]) -> Round {
    let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    Round {
        handshakes_per_sec: m(|r| r.handshakes_per_sec),
        cpu_us_per_handshake: m(|r| r.cpu_us_per_handshake),
        handshake_errors: rounds.iter().map(|r| r.handshake_errors).sum(),
        rps: m(|r| r.rps),
        p50_ms: m(|r| r.p50_ms),
        p99_ms: m(|r| r.p99_ms),
        cpu_us_per_request: m(|r| r.cpu_us_per_request),
        request_errors: rounds.iter().map(|r| r.request_errors).sum(),
    }
}

fn table(rows: &[(String, bool, Vec<Round>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:>12} {:>13} {:>9} {:>7} {:>7} {:>11} {:>7}",
        "server",
        "handshakes/s",
        "CPU µs/hshake",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "errors"
    );
    for (label, _, rounds) in rows {
        let s = summary(rounds);
        let _ = writeln!(
            out,
            "{label:<30} {:>12.0} {:>13.1} {:>9.0} {:>7.2} {:>7.2} {:>11.1} {:>7}",
            s.handshakes_per_sec,
            s.cpu_us_per_handshake,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.cpu_us_per_request,
            s.handshake_errors + s.request_errors
        );
    }
    out
}

/// bistro's figures as ratios to the better peer's (the faster for rates, the cheaper
/// for CPU).
fn verdicts(rows: &[(String, bool, Vec<Round>)]) -> Vec<String> {
    let Some(bistro) = rows.iter().find(|r| r.1).map(|r| summary(&r.2)) else {
        return Vec::new();
    };
    let peers: Vec<Round> = rows
        .iter()
        .filter(|r| !r.1)
        .map(|r| summary(&r.2))
        .collect();
    if peers.is_empty() {
        return vec![
            "no peer measured (nginx and HAProxy not on PATH, or --no-peers): no ratios".into(),
        ];
    }
    let best = |f: fn(&Round) -> f64| peers.iter().map(f).fold(f64::MIN, f64::max);
    let cheapest = |f: fn(&Round) -> f64| peers.iter().map(f).fold(f64::MAX, f64::min);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    vec![
        format!(
            "handshakes/s: bistro {:.2}× the better peer; CPU per handshake {:.2}× the cheaper peer's",
            ratio(bistro.handshakes_per_sec, best(|r| r.handshakes_per_sec)),
            ratio(
                bistro.cpu_us_per_handshake,
                cheapest(|r| r.cpu_us_per_handshake)
            ),
        ),
        format!(
            "keep-alive TLS requests/s: bistro {:.2}× the better peer; p99 {:.2} ms against {:.2} ms; CPU per request {:.2}× the cheaper peer's",
            ratio(bistro.rps, best(|r| r.rps)),
            bistro.p99_ms,
            cheapest(|r| r.p99_ms),
            ratio(
                bistro.cpu_us_per_request,
                cheapest(|r| r.cpu_us_per_request)
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_by_its_content_length() {
        let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n";
        assert_eq!(parse_head(partial).unwrap(), None);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nvia: x\r\n\r\nhel";
        assert_eq!(parse_head(head).unwrap(), Some((200, 46, 5)));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err(), "chunked answers are refused");
    }

    #[test]
    fn ratios_compare_bistro_with_the_better_peer() {
        let round = |hs: f64, cpu_hs: f64, rps: f64, cpu_req: f64| Round {
            handshakes_per_sec: hs,
            cpu_us_per_handshake: cpu_hs,
            rps,
            p99_ms: 2.0,
            cpu_us_per_request: cpu_req,
            ..Round::default()
        };
        let rows = vec![
            (
                "bistro".to_string(),
                true,
                vec![round(1200.0, 300.0, 20_000.0, 40.0)],
            ),
            (
                "nginx".to_string(),
                false,
                vec![round(1000.0, 400.0, 25_000.0, 35.0)],
            ),
            (
                "haproxy".to_string(),
                false,
                vec![round(800.0, 350.0, 10_000.0, 50.0)],
            ),
        ];
        let v = verdicts(&rows);
        assert!(v[0].contains("bistro 1.20× the better peer"), "{}", v[0]);
        assert!(v[0].contains("0.86× the cheaper"), "{}", v[0]);
        assert!(v[1].contains("bistro 0.80× the better peer"), "{}", v[1]);
        assert!(v[1].contains("1.14× the cheaper"), "{}", v[1]);
        assert!(table(&rows).contains("bistro"));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn options_are_checked_and_spelled_out() {
        let opts = BenchTlsOpts {
            connections: 64,
            clients: 16,
            seconds: 5,
            rounds: 3,
            workers: 2,
            path: "/healthz".into(),
            no_peers: false,
        };
        opts.validate().unwrap();
        assert_eq!(
            opts.command(),
            "bistro bench tls --connections 64 --clients 16 --seconds 5 --rounds 3 --workers 2 --path /healthz"
        );
        assert!(
            BenchTlsOpts {
                clients: 0,
                ..opts.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            BenchTlsOpts {
                path: "/a b".into(),
                ..opts
            }
            .validate()
            .is_err()
        );
    }
}
