//! A network distance on loopback: a TCP proxy that delivers every byte a fixed time
//! after it arrived, so a store, a waiter or a peer can be put 0.5 ms or 2 ms away
//! without root, `tc netem` or any kernel setup.
//!
//! One [`DelayProxy`] stands in front of one target (a store, a waiter) and listens on
//! `127.0.0.1:0`; the lab hands its address to whoever should reach the target from a
//! distance. For each connection it accepts it opens one to the target and forwards both
//! directions separately. Each chunk read from one side is queued with a due time, its
//! arrival plus the one-way delay (half the round trip) plus or minus the jitter, and
//! written to the other side when that time comes:
//!
//! - **Order and bytes are kept exactly.** A direction is one FIFO queue, and due times
//!   are made monotonic (a chunk is never due before the one ahead of it), so jitter
//!   delays a chunk but can never reorder two. TCP does the same on a real path.
//! - **Buffering is bounded.** A direction holds at most [`QUEUE_BYTES`] in flight; when
//!   it is full the proxy stops reading that side, and TCP's own flow control pushes
//!   back on the sender, as a full link would.
//! - **Closes are forwarded, delayed like data.** A side that shuts its writing half
//!   (EOF) has the other side's writing half shut when the EOF is due (a half-close, so
//!   a request can still be answered), and the connection ends when both directions
//!   have. A reset or write error on either side drops both at once.
//! - **Sub-millisecond delays are kept.** Tokio's timer counts whole milliseconds and
//!   rounds a deadline up, so 0.25 ms would become 1 to 2 ms: exactly the range the
//!   lab measures. Due times are therefore kept by a small timer thread of the proxy's
//!   own that waits on a condition variable (nanosecond timeouts, plus the kernel's
//!   timer slack of about 50 µs) and wakes the writer through a oneshot channel. A
//!   chunk is never early; it is late by however long the thread and then the writer
//!   wait to be scheduled, which grows with the machine's load, so the proxy counts
//!   how long it actually held each chunk ([`ProxyStats::mean_held_ms`]).
//!
//! What it does not model: bandwidth (only latency is added) and loss.
//!
//! [`DelayProxy::shutdown`] (called by the lab's cluster shutdown, on every path: end of
//! run, failure, Ctrl-C) stops accepting, drops every connection and ends the timer
//! thread; dropping the proxy does the same.

use crate::error::LabError;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The most bytes one direction of one connection holds in flight before the proxy
/// stops reading from its sender. 1 MiB is far above what a request/response protocol
/// has in flight, so it only matters for bulk transfers (the unit tests' megabytes).
pub const QUEUE_BYTES: usize = 1 << 20;

/// The most bytes read at once (one chunk, one due time).
const CHUNK: usize = 64 * 1024;

/// How far one proxy puts its target: the one-way delay and its jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    /// Added to every chunk in each direction: half the round trip.
    pub one_way: Duration,
    /// Each chunk's delay is drawn uniformly from `one_way ± jitter` (never below zero,
    /// and never before the chunk ahead of it).
    pub jitter: Duration,
}

impl Delay {
    /// A round trip of `rtt_ms` (split evenly between the two directions), each one-way
    /// delay varying by up to `jitter_ms`.
    pub fn from_rtt_ms(rtt_ms: f64, jitter_ms: f64) -> Delay {
        Delay {
            one_way: Duration::from_secs_f64(rtt_ms.max(0.0) / 2.0 / 1000.0),
            jitter: Duration::from_secs_f64(jitter_ms.max(0.0) / 1000.0),
        }
    }

    /// One chunk's delay.
    fn sample(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.one_way;
        }
        let j = self.jitter.as_secs_f64();
        let d = self.one_way.as_secs_f64() + rand::random_range(-j..=j);
        Duration::from_secs_f64(d.max(0.0))
    }
}

/// What a proxy has carried so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed at once because the target refused them (it was down).
    pub refused: u64,
    /// Bytes delivered from the clients to the target.
    pub bytes_to_target: u64,
    /// Bytes delivered from the target to the clients.
    pub bytes_from_target: u64,
    /// Chunks delivered, both directions.
    pub chunks: u64,
    /// The time those chunks were held, from their arrival until their delivery began,
    /// summed, µs: what the proxy actually added, timer overshoot included.
    pub held_us: u64,
}

impl ProxyStats {
    /// The mean time a chunk was held, ms (`None` before the first chunk).
    pub fn mean_held_ms(&self) -> Option<f64> {
        (self.chunks > 0).then(|| self.held_us as f64 / self.chunks as f64 / 1000.0)
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    to_target: AtomicU64,
    from_target: AtomicU64,
    chunks: AtomicU64,
    held_us: AtomicU64,
}

/// A running delay proxy in front of one target.
pub struct DelayProxy {
    name: String,
    addr: SocketAddr,
    target: SocketAddr,
    delay: Delay,
    /// Cancelled to stop the accept loop (and with it every connection).
    stop: CancellationToken,
    accept: Option<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
    timer: Timer,
}

impl DelayProxy {
    /// Starts a proxy on `127.0.0.1:0` that forwards to `target` with `delay` in each
    /// direction. The target need not be up yet: each accepted connection opens its own
    /// connection to it (a connection the target refuses is closed at once, so a
    /// client sees a stopped target as a closed connection).
    ///
    /// # Errors
    /// [`LabError::Proxy`] when no loopback port can be bound or the timer thread cannot
    /// be started.
    pub async fn start(name: &str, target: SocketAddr, delay: Delay) -> Result<Self, LabError> {
        let fail = |source: io::Error| LabError::Proxy {
            name: name.to_string(),
            target,
            source,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let timer = Timer::start(name).map_err(fail)?;
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            target,
            delay,
            timer.handle(),
            counters.clone(),
            stop.clone(),
        ));
        tracing::debug!(proxy = name, %addr, %target, ?delay, "delay proxy started");
        Ok(DelayProxy {
            name: name.to_string(),
            addr,
            target,
            delay,
            stop,
            accept: Some(accept),
            counters,
            timer,
        })
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The target it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The delay it adds.
    pub fn delay(&self) -> Delay {
        self.delay
    }

    /// Its name, e.g. `store` or `waiter w2`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it has carried so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            bytes_to_target: c.to_target.load(Ordering::Relaxed),
            bytes_from_target: c.from_target.load(Ordering::Relaxed),
            chunks: c.chunks.load(Ordering::Relaxed),
            held_us: c.held_us.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, drops every connection, and ends the timer thread.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(accept) = self.accept.take()
            && let Err(e) = accept.await
            && e.is_panic()
        {
            tracing::warn!(proxy = %self.name, "the delay proxy's accept task panicked: {e}");
        }
        self.timer.stop();
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // Without an explicit shutdown (a panic, a dropped future): aborting the accept
        // task drops its JoinSet, which aborts every connection task.
        self.stop.cancel();
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.timer.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    delay: Delay,
    timer: TimerHandle,
    counters: Arc<Counters>,
    stopped: CancellationToken,
) {
    // Owning the connection tasks here means that ending this task (stop signal or
    // abort) drops the set and with it every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(connection(client, target, delay, timer.clone(), counters.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%target, "delay proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections as they go, so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    delay: Delay,
    timer: TimerHandle,
    counters: Arc<Counters>,
) {
    let upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%target, "delay proxy: target refused: {e}");
            // A reset rather than a clean close: the nearest a proxy gets to the
            // connection refusal the client would have seen from the target itself.
            if let Err(e) = client.set_zero_linger() {
                tracing::debug!("delay proxy: cannot set SO_LINGER: {e}");
            }
            return;
        }
    };
    // Chunks are timed one by one; Nagle's algorithm would hold small ones back on top.
    for s in [&client, &upstream] {
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!("delay proxy: cannot set TCP_NODELAY: {e}");
        }
    }
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let up = pipe(
        client_read,
        upstream_write,
        delay,
        &timer,
        &counters,
        &counters.to_target,
    );
    let down = pipe(
        upstream_read,
        client_write,
        delay,
        &timer,
        &counters,
        &counters.from_target,
    );
    // Both directions end with their EOF; an error in either ends both (try_join drops
    // the other), and dropping the halves closes the sockets.
    if let Err(e) = tokio::try_join!(up, down) {
        tracing::debug!(%target, "delay proxy: connection ended: {e}");
    }
}

/// One queued item: bytes, or the sender's EOF (`None`), due at `due`.
struct Item {
    arrived: Instant,
    due: Instant,
    bytes: Option<Vec<u8>>,
    _room: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Forwards one direction: reads chunks from `from`, delivers each to `to` when due.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Delay,
    timer: &TimerHandle,
    counters: &Counters,
    delivered: &AtomicU64,
) -> io::Result<()> {
    let (queue, mut due) = mpsc::unbounded_channel::<Item>();
    let room = Arc::new(Semaphore::new(QUEUE_BYTES));
    let read = async move {
        let mut last_due = Instant::now();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            let arrived = Instant::now();
            // Never due before the chunk ahead: jitter may delay, never reorder.
            last_due = (arrived + delay.sample()).max(last_due);
            if n == 0 {
                // The receiver is gone only if the writer failed, whose error wins.
                let _writer_gone = queue.send(Item {
                    arrived,
                    due: last_due,
                    bytes: None,
                    _room: None,
                });
                return Ok::<(), io::Error>(());
            }
            // A copy of what was read, not the whole read buffer: thousands of small
            // chunks in flight must not hold 64 KiB each.
            let bytes = buf[..n].to_vec();
            // Wait for room before reading on: a full queue stops this side, and TCP
            // flow control pushes back on the sender.
            let permit = room
                .clone()
                .acquire_many_owned(n as u32)
                .await
                .map_err(|_| io::Error::other("the delay proxy's queue was closed"))?;
            if queue
                .send(Item {
                    arrived,
                    due: last_due,
                    bytes: Some(bytes),
                    _room: Some(permit),
                })
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some(item) = due.recv().await {
            timer.sleep_until(item.due).await?;
            match item.bytes {
                Some(bytes) => {
                    let held = item.arrived.elapsed().as_micros();
                    counters
                        .held_us
                        .fetch_add(u64::try_from(held).unwrap_or(u64::MAX), Ordering::Relaxed);
                    counters.chunks.fetch_add(1, Ordering::Relaxed);
                    to.write_all(&bytes).await?;
                    delivered.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                None => {
                    // Forward the half-close; the other direction carries on.
                    to.shutdown().await?;
                    return Ok(());
                }
            }
            // The permit in `item` is released here, making room for the reader.
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// A timer with sub-millisecond resolution for one proxy: a thread that waits on a
/// condition variable until the earliest due time, then completes its oneshot.
struct Timer {
    shared: Arc<TimerShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct TimerShared {
    state: Mutex<TimerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TimerState {
    due: BinaryHeap<Due>,
    seq: u64,
    stopped: bool,
}

/// One pending wake-up; the heap is a max-heap, so the order is reversed.
struct Due {
    at: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl TimerShared {
    fn lock(&self) -> MutexGuard<'_, TimerState> {
        // Nothing in the critical sections can panic halfway through an update.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Timer {
    fn start(name: &str) -> io::Result<Timer> {
        let shared = Arc::new(TimerShared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("delay {name}"))
            .spawn(move || timer_thread(&s))?;
        Ok(Timer {
            shared,
            thread: Some(thread),
        })
    }

    fn handle(&self) -> TimerHandle {
        TimerHandle(self.shared.clone())
    }

    fn stop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("a delay proxy's timer thread panicked");
        }
    }
}

fn timer_thread(shared: &TimerShared) {
    let mut state = shared.lock();
    loop {
        if state.stopped {
            // Dropping the pending senders wakes their writers with an error.
            state.due.clear();
            return;
        }
        let now = Instant::now();
        while state.due.peek().is_some_and(|d| d.at <= now) {
            let d = state.due.pop().expect("peeked above");
            // The writer is gone only if its connection ended meanwhile.
            let _writer_gone = d.tx.send(());
        }
        state = match state.due.peek() {
            Some(next) => {
                let wait = next.at.saturating_duration_since(now);
                shared
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

/// Schedules wake-ups on a proxy's [`Timer`].
#[derive(Clone)]
struct TimerHandle(Arc<TimerShared>);

impl TimerHandle {
    /// Completes at `at` (at once if it has passed).
    async fn sleep_until(&self, at: Instant) -> io::Result<()> {
        if at <= Instant::now() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.0.lock();
            if state.stopped {
                return Err(io::Error::other("the delay proxy stopped"));
            }
            state.seq += 1;
            let seq = state.seq;
            state.due.push(Due { at, seq, tx });
            // Wake the thread only when this is now the earliest due time.
            if state.due.peek().is_some_and(|d| d.seq == seq) {
                self.0.wake.notify_one();
            }
        }
        rx.await
            .map_err(|_| io::Error::other("the delay proxy stopped"))
    }
}

#[cfg(test)]
mod tests;
