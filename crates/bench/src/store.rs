//! `bistro bench store`: what statelessness costs, measured in one run.
//!
//! Part 1 times the store operations a request needs (create, read, compare-and-set
//! update) on each backend, sequentially from one client and from several at once.
//! Part 2 runs one real waiter per architecture on a loopback port and drives it with
//! the same HTTP load (read and write requests from concurrent keep-alive clients), so
//! the request rate of stateless-sqlite, -postgres and -redis, and of replicated (the
//! loaded waiter copying every change to a second waiter before answering), can be read
//! as a ratio to stateful. Every figure printed is measured in this run; nothing is
//! cached.

use anyhow::Context;
use bistro_client::Client;
use bistro_orders::{Change, ItemInput, Menu, NewOrder, Order};
use bistro_store::{OrderStore, SessionId, StoreConfig, StoreUrl, new_order_id};
use bistro_waiter::replication::{Peer, ReplicationConfig};
use bistro_waiter::{Mode, Waiter, WaiterConfig};
use clap::Args;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of `bistro bench store`.
#[derive(Debug, Clone, Args)]
pub struct BenchStoreOpts {
    /// SQLite file to benchmark on (created, and deleted afterwards)
    #[arg(long, default_value = "bistro-bench.db")]
    pub sqlite: String,
    /// PostgreSQL URL; the benchmark uses its own schema and drops it afterwards
    #[arg(
        long,
        env = "BISTRO_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// Redis URL; the benchmark uses its own key prefix and deletes its keys afterwards
    #[arg(
        long,
        env = "BISTRO_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis: String,
    /// Skip backends whose server is unreachable instead of failing
    #[arg(long)]
    pub skip_unreachable: bool,
    /// Operations per measurement in part 1
    #[arg(long, default_value_t = 2000)]
    pub ops: usize,
    /// Concurrent clients for the concurrent measurements
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of HTTP load per architecture and request kind in part 2
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds of part 2: the architectures take turns in every round, and each cell
    /// shows its median round, so a slow moment of the machine does not land on one
    /// architecture alone
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Stats {
    ops: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Stats {
    fn new(mut lat: Vec<Duration>, elapsed: Duration) -> Stats {
        lat.sort_unstable();
        Stats {
            ops: lat.len(),
            elapsed,
            lat,
        }
    }
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i].as_secs_f64() * 1000.0
    }
}

fn sample_order(menu: &Menu) -> Order {
    let new = NewOrder {
        items: vec![ItemInput {
            dish: "fries".into(),
            quantity: 1,
        }],
        ..Default::default()
    };
    Order::create(new_order_id(), new, menu, now_ms()).expect("the sample order is valid")
}

struct Backend {
    name: &'static str,
    url: StoreUrl,
    store: Arc<dyn OrderStore>,
}

// A build without some store backends skips them (see the crate's features).
#[cfg_attr(
    not(all(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(unused_mut, unused_variables)
)]
async fn open_backends(opts: &BenchStoreOpts, tag: &str) -> anyhow::Result<Vec<Backend>> {
    let config = StoreConfig::default();
    let mut out = vec![Backend {
        name: "memory",
        url: StoreUrl::Memory,
        store: bistro_store::open(&StoreUrl::Memory, config.clone()).await?,
    }];
    #[cfg(feature = "sqlite")]
    {
        let sqlite = StoreUrl::parse(&format!("sqlite://{}", opts.sqlite))?;
        out.push(Backend {
            name: "sqlite",
            store: bistro_store::open(&sqlite, config.clone()).await?,
            url: sqlite,
        });
    }
    #[cfg(not(feature = "sqlite"))]
    println!("(skipping sqlite: this build of bistro has no SQLite support)");
    #[cfg(feature = "postgres")]
    {
        let pg = bistro_store::PostgresStore::connect_in_schema(
            &opts.postgres,
            &format!("bench_{tag}"),
            config.clone(),
        )
        .await;
        match pg {
            Ok(s) => out.push(Backend {
                name: "postgres",
                url: StoreUrl::parse(&opts.postgres)?,
                store: Arc::new(s),
            }),
            Err(e) if opts.skip_unreachable => println!("(skipping postgres: {e})"),
            Err(e) => {
                return Err(e).context(
                    "PostgreSQL is unreachable (use --skip-unreachable to go on without it)",
                );
            }
        }
    }
    #[cfg(not(feature = "postgres"))]
    println!("(skipping postgres: this build of bistro has no PostgreSQL support)");
    #[cfg(feature = "redis")]
    {
        let redis = bistro_store::RedisStore::connect_with_prefix(
            &opts.redis,
            &format!("bench-{tag}:"),
            config,
        )
        .await;
        match redis {
            Ok(s) => out.push(Backend {
                name: "redis",
                url: StoreUrl::parse(&opts.redis)?,
                store: Arc::new(s),
            }),
            Err(e) if opts.skip_unreachable => println!("(skipping redis: {e})"),
            Err(e) => {
                return Err(e)
                    .context("Redis is unreachable (use --skip-unreachable to go on without it)");
            }
        }
    }
    #[cfg(not(feature = "redis"))]
    println!("(skipping redis: this build of bistro has no Redis support)");
    Ok(out)
}

/// Runs `op` `n` times from each of `clients` tasks; returns latencies.
async fn drive<F, Fut>(n: usize, clients: usize, op: F) -> anyhow::Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let per = n.div_ceil(clients);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            // Exactly `n` operations, each index once, whatever `n` is: a rounded-up
            // share per client ran the last index several times (a duplicate insert).
            for i in (c..n).step_by(clients) {
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Stats::new(all, started.elapsed()))
}

async fn bench_ops(
    b: &Backend,
    opts: &BenchStoreOpts,
    clients: usize,
) -> anyhow::Result<[Stats; 3]> {
    let menu = Arc::new(Menu::default_menu());
    let n = opts.ops;
    // Fixtures: one session and order per operation index, so updates never conflict.
    let fixtures: Arc<Vec<(SessionId, Order)>> = Arc::new(
        (0..n)
            .map(|_| (SessionId::generate(), sample_order(&menu)))
            .collect(),
    );
    let store = b.store.clone();
    let f = fixtures.clone();
    let create = drive(n, clients, move |i| {
        let (store, f) = (store.clone(), f.clone());
        async move {
            let (s, o) = &f[i];
            store.create_session(*s, now_ms()).await?;
            store.insert_order(*s, o, now_ms()).await?;
            Ok(())
        }
    })
    .await?;
    let store = b.store.clone();
    let f = fixtures.clone();
    let read = drive(n, clients, move |i| {
        let (store, f) = (store.clone(), f.clone());
        async move {
            let (s, o) = &f[i];
            store.get_order(*s, &o.id, now_ms()).await?;
            Ok(())
        }
    })
    .await?;
    let store = b.store.clone();
    let m = menu.clone();
    let update = drive(n, clients, move |i| {
        let (store, f, m) = (store.clone(), fixtures.clone(), m.clone());
        async move {
            let (s, o) = &f[i];
            let mut next = store.get_order(*s, &o.id, now_ms()).await?;
            let expected = next.version;
            next.apply(&[Change::SetSpice((i % 5) as u32)], &m, now_ms())?;
            store.update_order(*s, &next, expected, now_ms()).await?;
            Ok(())
        }
    })
    .await?;
    Ok([create, read, update])
}

/// Runs the benchmark and prints its tables.
pub async fn run(opts: BenchStoreOpts) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.ops > 0 && opts.concurrency > 0 && opts.rounds > 0 && opts.seconds > 0.0,
        "--ops, --concurrency, --rounds and --seconds must be greater than 0"
    );
    let tag = format!("{}_{}", std::process::id(), now_ms() % 100_000);
    let backends = open_backends(&opts, &tag).await?;
    println!(
        "bistro bench store — {} ops per measurement, {} concurrent clients, loopback\n",
        opts.ops, opts.concurrency
    );
    println!("Part 1: store operations (read = get_order; update = get_order + compare-and-set)");
    println!(
        "{:<9} {:>3} | {:>10} {:>8} | {:>10} {:>8} | {:>10} {:>8}",
        "backend", "cli", "create/s", "p50 ms", "read/s", "p50 ms", "update/s", "p50 ms"
    );
    for b in &backends {
        for clients in [1, opts.concurrency] {
            let [c, r, u] = bench_ops(b, &opts, clients)
                .await
                .with_context(|| format!("benchmarking {}", b.name))?;
            println!(
                "{:<9} {:>3} | {:>10.0} {:>8.3} | {:>10.0} {:>8.3} | {:>10.0} {:>8.3}",
                b.name,
                clients,
                c.rate(),
                c.pct(0.5),
                r.rate(),
                r.pct(0.5),
                u.rate(),
                u.pct(0.5)
            );
        }
    }

    println!(
        "\nPart 2: one waiter over HTTP, {} keep-alive clients, {:.1} s per cell, median of {} interleaved rounds",
        opts.concurrency, opts.seconds, opts.rounds
    );
    println!(
        "{:<20} | {:>9} {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} {:>7}",
        "architecture",
        "reads/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "ratio"
    );
    // Every round runs each architecture once, in turn; a cell is its median round.
    let cells: Vec<Cell<'_>> = backends
        .iter()
        .map(Cell::Store)
        .chain([Cell::Replicated])
        .collect();
    let mut measured: Vec<(Vec<Stats>, Vec<Stats>)> =
        cells.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for _ in 0..opts.rounds {
        for (cell, stats) in cells.iter().zip(&mut measured) {
            let (reads, writes) = http_load(cell, &opts)
                .await
                .with_context(|| format!("HTTP load on {}", cell.label()))?;
            stats.0.push(reads);
            stats.1.push(writes);
        }
    }
    let mut baseline: Option<(f64, f64)> = None;
    for (cell, (reads, writes)) in cells.iter().zip(measured) {
        let (reads, writes) = (median(reads), median(writes));
        let (r0, w0) = *baseline.get_or_insert((reads.rate(), writes.rate()));
        println!(
            "{:<20} | {:>9.0} {:>8.3} {:>8.3} {:>6.2}x | {:>9.0} {:>8.3} {:>8.3} {:>6.2}x",
            cell.label(),
            reads.rate(),
            reads.pct(0.5),
            reads.pct(0.99),
            reads.rate() / r0,
            writes.rate(),
            writes.pct(0.5),
            writes.pct(0.99),
            writes.rate() / w0
        );
    }
    println!("\nratio = requests/s relative to stateful in this run.");
    cleanup(&opts, &tag).await;
    Ok(())
}

/// One architecture of part 2: a waiter over one of part 1's stores, or a replicated
/// pair (two waiters in memory, each the other's peer).
enum Cell<'a> {
    Store(&'a Backend),
    Replicated,
}

impl Cell<'_> {
    fn label(&self) -> String {
        match self {
            Cell::Store(b) if b.name == "memory" => "stateful".to_string(),
            Cell::Store(b) => format!("stateless-{}", b.name),
            Cell::Replicated => "replicated".to_string(),
        }
    }
}

/// A waiter served on loopback until `stop` is sent.
struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(listener: tokio::net::TcpListener, waiter: Waiter) -> anyhow::Result<Served> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bistro_waiter::run(listener, waiter, async {
            let _sent_or_dropped = stopped.await;
        }));
        Ok(Served { addr, stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// The waiters of a cell, the first one the loaded one.
async fn serve_cell(cell: &Cell<'_>) -> anyhow::Result<Vec<Served>> {
    match cell {
        Cell::Store(b) => {
            let mode = if b.name == "memory" {
                Mode::Stateful
            } else {
                Mode::Stateless
            };
            let config = WaiterConfig {
                id: "bench".into(),
                mode,
                store_url: b.url.clone(),
                ..WaiterConfig::default()
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            Ok(vec![
                Served::start(listener, Waiter::new(config, b.store.clone())).await?,
            ])
        }
        Cell::Replicated => {
            let listeners = [
                tokio::net::TcpListener::bind("127.0.0.1:0").await?,
                tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            ];
            let addrs = [listeners[0].local_addr()?, listeners[1].local_addr()?];
            let secret = bistro_supervise::random_hex();
            let mut served = Vec::new();
            for (i, listener) in listeners.into_iter().enumerate() {
                let other = 1 - i;
                let peers = vec![Peer {
                    id: format!("w{}", other + 1),
                    addr: addrs[other],
                }];
                let config = WaiterConfig {
                    id: format!("w{}", i + 1),
                    ..WaiterConfig::default()
                };
                let store = Arc::new(bistro_store::MemoryStore::new(StoreConfig::default()));
                let waiter = Waiter::replicated(
                    config,
                    store,
                    ReplicationConfig::new(peers, secret.clone()),
                );
                served.push(Served::start(listener, waiter).await?);
            }
            Ok(served)
        }
    }
}

/// The round with the median request rate.
fn median(mut rounds: Vec<Stats>) -> Stats {
    rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    rounds.swap_remove(rounds.len() / 2)
}

async fn http_load(cell: &Cell<'_>, opts: &BenchStoreOpts) -> anyhow::Result<(Stats, Stats)> {
    let served = serve_cell(cell).await?;
    let addr = served[0].addr;
    // Each client is one diner with one order.
    let mut diners = Vec::new();
    for _ in 0..opts.concurrency {
        let c = Client::new(addr);
        let resp = c
            .post_json(
                "/v1/orders",
                &json!({"items":[{"dish":"fries","quantity":1}]}),
            )
            .await?;
        anyhow::ensure!(
            resp.status == 201,
            "creating a fixture order failed: {}",
            resp.text()
        );
        let id = resp.value()["id"].as_str().context("order id")?.to_string();
        diners.push(Arc::new((c, format!("/v1/orders/{id}"))));
    }
    let window = Duration::from_secs_f64(opts.seconds);
    let reads = timed(&diners, window, |d, _| async move {
        let r = d.0.get(&d.1).await?;
        anyhow::ensure!(r.status == 200, "read failed: {}", r.status);
        Ok(())
    })
    .await?;
    let writes = timed(&diners, window, |d, i| async move {
        let body = json!({"notes": {"spice": i % 6}});
        let r = d.0.patch_json(&d.1, &body).await?;
        anyhow::ensure!(r.status == 200, "write failed: {} {}", r.status, r.text());
        Ok(())
    })
    .await?;
    for s in served {
        s.stop().await?;
    }
    Ok((reads, writes))
}

async fn timed<F, Fut>(
    diners: &[Arc<(Client, String)>],
    window: Duration,
    op: F,
) -> anyhow::Result<Stats>
where
    F: Fn(Arc<(Client, String)>, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for d in diners {
        let (d, op) = (d.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while started.elapsed() < window {
                let t = Instant::now();
                op(d.clone(), i).await?;
                lat.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(Stats::new(all, started.elapsed()))
}

#[cfg_attr(
    not(all(feature = "postgres", feature = "redis")),
    allow(unused_variables)
)]
async fn cleanup(opts: &BenchStoreOpts, tag: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", opts.sqlite);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: could not remove {path}: {e}");
        }
    }
    #[cfg(feature = "postgres")]
    if let Err(e) =
        bistro_store::drop_postgres_schema(&opts.postgres, &format!("bench_{tag}")).await
    {
        eprintln!("warning: could not drop the benchmark schema: {e}");
    }
    #[cfg(feature = "redis")]
    if let Err(e) = bistro_store::delete_redis_prefix(&opts.redis, &format!("bench-{tag}:")).await {
        eprintln!("warning: could not delete the benchmark keys: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn drive_runs_every_index_exactly_once_whatever_the_split() {
        for (n, clients) in [(10, 4), (500, 16), (3, 8), (16, 16)] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            let stats = drive(n, clients, move |i| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(i);
                    Ok(())
                }
            })
            .await
            .unwrap();
            let mut seen = seen.lock().unwrap().clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n={n} clients={clients}");
            assert!(stats.rate() > 0.0);
        }
    }
}
