//! `bistro bench memory`: what a held session costs a stateful waiter, in bytes.
//!
//! Starts a real `bistro waiter` child process, reads its resident set size (RSS) from
//! `/proc`, creates N sessions through its HTTP API (each the first order of a new
//! diner: one session holding one order, the common case), reads the RSS again, and
//! divides. The load is bounded (N requests, a fixed number of connections) and stays on
//! loopback. Linux only, since it reads `/proc/PID/status`.

use anyhow::{Context, bail};
use bistro_client::Client;
use bistro_supervise::{Proc, Spec};
use clap::Args;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Options of `bistro bench memory`.
#[derive(Debug, Clone, Args)]
pub struct BenchMemoryOpts {
    /// Sessions to create
    #[arg(long, default_value_t = 100_000)]
    pub sessions: usize,
    /// Concurrent connections creating them
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc (Linux only)")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(kb * 1024)
}

/// Runs the measurement and prints the result.
pub async fn run(opts: BenchMemoryOpts) -> anyhow::Result<()> {
    if opts.sessions == 0 || opts.connections == 0 {
        bail!("--sessions and --connections must be greater than 0");
    }
    let exe = std::env::current_exe().context("locating the bistro binary")?;
    let max = (opts.sessions + 1_000).to_string();
    let spec = Spec::bistro("waiter mem", exe)
        .args([
            "waiter",
            "--id",
            "mem",
            "--listen",
            "127.0.0.1:0",
            "--max-sessions",
            &max,
            // The bench opens sessions as fast as it can; the per-waiter rate limit
            // would measure itself.
            "--session-rate",
            "0",
        ])
        .isolated();
    let (mut waiter, ready) = Proc::start(&spec, Duration::from_secs(20)).await?;
    let addr = ready.context("the waiter's readiness line")?.http;
    let result = measure(waiter.pid(), addr, &opts).await;
    waiter.stop(Duration::from_secs(5)).await;
    result
}

async fn measure(pid: u32, addr: SocketAddr, opts: &BenchMemoryOpts) -> anyhow::Result<()> {
    // Warm up the allocator and the server's per-connection state with a few requests
    // before the baseline, so the figure is about sessions, not first-use costs.
    let warm = Client::new(addr);
    for _ in 0..100 {
        warm.get("/v1/menu").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes(pid)?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..opts.connections {
        let (next, total) = (next.clone(), opts.sessions);
        tasks.push(tokio::spawn(async move {
            let c = Client::new(addr);
            let body = json!({"items":[{"dish":"fries","quantity":1}],"notes":{"spice":1}});
            while next.fetch_add(1, Ordering::Relaxed) < total {
                c.clear_cookies();
                let r = c.post_json("/v1/orders", &body).await?;
                if r.status != 201 {
                    bail!("creating a session failed: {} {}", r.status, r.text());
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(pid)?;
    let info = Client::new(addr).get("/v1/waiter").await?.value();
    let held = info["sessions"].as_u64().unwrap_or(0);
    let per = after.saturating_sub(before) as f64 / opts.sessions as f64;
    println!(
        "bistro bench memory — one stateful waiter, {} sessions (one order each)",
        opts.sessions
    );
    println!("  RSS before: {:>8.1} MiB", before as f64 / 1048576.0);
    println!(
        "  RSS after:  {:>8.1} MiB   (waiter reports {held} sessions held)",
        after as f64 / 1048576.0
    );
    println!("  per session: {per:.0} bytes (goal: at most 1024)");
    println!(
        "  created in {:.1} s ({:.0} sessions/s over {} connections)",
        took.as_secs_f64(),
        opts.sessions as f64 / took.as_secs_f64(),
        opts.connections
    );
    Ok(())
}
