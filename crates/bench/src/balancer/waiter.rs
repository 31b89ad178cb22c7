//! `bistro bench waiter`: what the waiter's own machinery costs, against a minimal axum
//! server measured in the same run.
//!
//! The waiter is an axum application too, so the floor it is held against is the
//! smallest axum server that answers the same requests: `GET /healthz` and `GET
//! /v1/orders/{id}` with the very bytes the waiter answers (the benchmark reads them
//! from the waiter first and hands them to the baseline in a file), and nothing else: no
//! middleware, no session, no store, no metrics, served by `axum::serve`. Both run as
//! `bistro` child processes on the same runtime settings, loaded alternately by the
//! built-in closed-loop generator, round after round; the figures are medians. The
//! order is read with the diner's session cookie, so every measured read looks the
//! session up, reads the order and renders it, as a diner's would.
//!
//! The ratio (waiter ÷ baseline requests/s) is what the waiter's layers cost: request
//! ids, the mode and waiter headers, metrics by route, the timeout, the session lookup,
//! the order's rendering. Server CPU per request (from `/proc`) says the same in µs.

use super::procs::{self, TempDir, spawn_bistro};
use super::report::median;
use super::{load, strings};
use anyhow::{Context, bail};
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

/// Options of `bistro bench waiter`.
#[derive(Debug, Clone, Args)]
pub struct BenchWaiterOpts {
    /// Concurrent keep-alive connections
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of load per setup and round
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds; each figure is the median over them
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Load generator threads
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl BenchWaiterOpts {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=10_000).contains(&self.connections) {
            bail!("--connections must be 1 to 10000");
        }
        if !(1..=600).contains(&self.seconds) || !(1..=20).contains(&self.rounds) {
            bail!("--seconds must be 1 to 600 and --rounds 1 to 20");
        }
        if !(1..=64).contains(&self.threads) {
            bail!("--threads must be 1 to 64");
        }
        Ok(())
    }
}

/// Options of the hidden `bistro bench baseline`: the minimal axum server.
#[derive(Debug, Clone, Args)]
pub struct BaselineOpts {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// File holding the body `GET /v1/orders/{id}` answers
    #[arg(long)]
    pub order_json: std::path::PathBuf,
}

/// Serves the baseline until the process is stopped.
///
/// # Errors
/// When the body file cannot be read or the address bound.
pub async fn baseline(opts: BaselineOpts, ready_json: bool) -> anyhow::Result<()> {
    use axum::routing::get;
    let order: &'static [u8] = std::fs::read(&opts.order_json)
        .with_context(|| format!("reading {}", opts.order_json.display()))?
        .leak();
    let json = |body: &'static [u8]| {
        (
            [(http::header::CONTENT_TYPE, "application/json")],
            axum::body::Bytes::from_static(body),
        )
    };
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || async move { json(br#"{"status":"alive"}"#) }),
        )
        // What a balancer's health check asks, so the baseline can stand behind one as a
        // backend that costs next to nothing (`bench balancer --backend trivial`).
        .route(
            "/readyz",
            get(move || async move { json(br#"{"status":"ready"}"#) }),
        )
        .route("/v1/orders/{id}", get(move || async move { json(order) }));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let local = listener.local_addr()?;
    tracing::info!("baseline listening on http://{local}");
    if ready_json {
        bistro_supervise::announce(&bistro_proto::Ready {
            role: "baseline".into(),
            id: None,
            pid: std::process::id(),
            http: local,
            scheme: None,
            tcp: None,
            admin: None,
        });
    }
    axum::serve(listener, app).await?;
    Ok(())
}

/// One measurement: requests/s, p50 and p99 (ms), server µs per request, errors.
type Measured = (f64, f64, f64, f64, u64);

/// One setup's medians.
struct Row {
    label: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    errors: u64,
}

/// Runs the benchmark and prints its table.
///
/// # Errors
/// When a server does not start or a measurement fails.
pub async fn run(opts: BenchWaiterOpts) -> anyhow::Result<()> {
    opts.validate()?;
    tokio::task::spawn_blocking(move || run_blocking(&opts))
        .await
        .context("the benchmark panicked")?
}

fn run_blocking(opts: &BenchWaiterOpts) -> anyhow::Result<()> {
    procs::print_header(
        "bistro bench waiter",
        &format!(
            "bistro bench waiter --connections {} --seconds {} --rounds {} --threads {}",
            opts.connections, opts.seconds, opts.rounds, opts.threads
        ),
    );
    let dir = TempDir::new()?;
    let (mut waiter, waiter_addr) = spawn_bistro(
        "waiter",
        &strings(&[
            "waiter",
            "--id",
            "w1",
            "--listen",
            "127.0.0.1:0",
            "--session-rate",
            "0",
        ]),
        &[],
    )?;
    let (cookie, order_path, body) = make_order(waiter_addr)?;
    let order_json = dir.path().join("order.json");
    std::fs::write(&order_json, &body).context("writing the order's body")?;
    let (mut baseline, baseline_addr) = spawn_bistro(
        "baseline",
        &strings(&[
            "bench",
            "baseline",
            "--listen",
            "127.0.0.1:0",
            "--order-json",
            &order_json.to_string_lossy(),
        ]),
        &[],
    )?;
    let (baseline_pid, waiter_pid) = (baseline.pid(), waiter.pid());
    let setups: [(&'static str, u32, SocketAddr, &str, Option<&str>); 4] = [
        (
            "axum baseline  GET /healthz",
            baseline_pid,
            baseline_addr,
            "/healthz",
            None,
        ),
        (
            "waiter         GET /healthz",
            waiter_pid,
            waiter_addr,
            "/healthz",
            None,
        ),
        (
            "axum baseline  GET /v1/orders/{id}",
            baseline_pid,
            baseline_addr,
            &order_path,
            None,
        ),
        (
            "waiter         GET /v1/orders/{id}",
            waiter_pid,
            waiter_addr,
            &order_path,
            Some(&cookie),
        ),
    ];
    let window = Duration::from_secs(opts.seconds);
    let mut rounds: Vec<Vec<Measured>> = vec![Vec::new(); setups.len()];
    for round in 0..opts.rounds {
        // Rotate the order each round, so a drift of the machine hits every setup alike.
        for k in 0..setups.len() {
            let i = (k + round) % setups.len();
            let (_, pid, addr, path, cookie) = &setups[i];
            let pids = [*pid];
            let before = procs::cpu_time(&pids)?;
            let target = load::Target {
                addr: *addr,
                path: (*path).to_string(),
                sticky: false,
                cookie: cookie.map(str::to_string),
            };
            let s = load::run(&target, opts.connections, opts.threads, window)?;
            let spent = procs::cpu_time(&pids)?.since(before).total();
            let requests = s.requests.max(1) as f64;
            rounds[i].push((
                s.requests as f64 / s.elapsed.as_secs_f64().max(1e-9),
                s.latency.value_at_quantile(0.50) as f64 / 1000.0,
                s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                spent.as_secs_f64() * 1e6 / requests,
                s.errors,
            ));
        }
    }
    baseline.stop_blocking(Duration::from_secs(5));
    waiter.stop_blocking(Duration::from_secs(5));
    let rows: Vec<Row> = setups
        .iter()
        .zip(&rounds)
        .map(|((label, ..), samples)| Row {
            label,
            rps: median(&samples.iter().map(|s| s.0).collect::<Vec<_>>()),
            p50_ms: median(&samples.iter().map(|s| s.1).collect::<Vec<_>>()),
            p99_ms: median(&samples.iter().map(|s| s.2).collect::<Vec<_>>()),
            cpu_us: median(&samples.iter().map(|s| s.3).collect::<Vec<_>>()),
            errors: samples.iter().map(|s| s.4).sum(),
        })
        .collect();
    println!(
        "load:     {} connections, {} thread(s), {} round(s) of {} s per setup, interleaved\n",
        opts.connections, opts.threads, opts.rounds, opts.seconds
    );
    println!(
        "{:<36} {:>9} {:>7} {:>7} {:>12} {:>8}  ratio",
        "setup", "req/s", "p50 ms", "p99 ms", "server µs/req", "errors"
    );
    for (i, r) in rows.iter().enumerate() {
        let ratio = if i % 2 == 1 {
            format!("{:.2}x", r.rps / rows[i - 1].rps.max(1e-9))
        } else {
            "1.00x".into()
        };
        println!(
            "{:<36} {:>9.0} {:>7.2} {:>7.2} {:>12.1} {:>8}  {ratio}",
            r.label, r.rps, r.p50_ms, r.p99_ms, r.cpu_us, r.errors
        );
    }
    let health = rows[1].rps / rows[0].rps.max(1e-9);
    let read = rows[3].rps / rows[2].rps.max(1e-9);
    println!();
    println!(
        "- waiter /healthz: {health:.2}x the minimal axum server (goal 0.8x: {})",
        if health >= 0.8 { "met" } else { "not met" }
    );
    println!(
        "- waiter stateful order read: {read:.2}x the minimal axum server answering the same bytes (goal 0.6x: {})",
        if read >= 0.6 { "met" } else { "not met" }
    );
    println!(
        "\nFigures are medians over {} round(s); the load generator shares the machine's cores with the server it measures.",
        opts.rounds
    );
    Ok(())
}

/// Starts a session with one order on the waiter: the cookie, the order's path, and the
/// body the waiter answers for it (which the baseline will answer too).
fn make_order(addr: SocketAddr) -> anyhow::Result<(String, String, Vec<u8>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = bistro_client::Client::new(addr).with_timeout(Duration::from_secs(10));
        let created = client
            .post_json(
                "/v1/orders",
                &serde_json::json!({
                    "items": [{"dish": "fries", "quantity": 2}, {"dish": "green-salad", "quantity": 1}],
                    "notes": {"spice": 2, "allergies": ["peanuts"], "requests": "window seat"}
                }),
            )
            .await
            .context("creating the order to read")?;
        if created.status != 201 {
            bail!("the waiter answered {}: {}", created.status, created.text());
        }
        let session = client
            .cookie(bistro_proto::cookies::SESSION)
            .context("the waiter set no session cookie")?;
        let id = created.value()["id"]
            .as_str()
            .context("the created order has no id")?
            .to_string();
        let path = format!("/v1/orders/{id}");
        let read = client.get(&path).await.context("reading the order")?;
        if read.status != 200 {
            bail!("reading the order answered {}", read.status);
        }
        Ok((format!("bistro_session={session}"), path, read.body.to_vec()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused() {
        let ok = BenchWaiterOpts {
            connections: 64,
            seconds: 5,
            rounds: 3,
            threads: 1,
        };
        assert!(ok.validate().is_ok());
        assert!(
            BenchWaiterOpts {
                connections: 0,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(BenchWaiterOpts { rounds: 0, ..ok }.validate().is_err());
    }
}
