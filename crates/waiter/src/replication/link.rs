//! One waiter's line to one peer: a persistent HTTP/1.1 connection, batching, and
//! whether the peer is there.
//!
//! Callers queue [`Item`]s on a bounded channel and wait for their [`Reply`]. One task
//! per peer takes everything queued (up to [`MAX_BATCH`]) as one `POST /v1/peer/batch`,
//! so under load many changes share a round trip, and while a batch is out the next
//! one fills: the classic group commit. Several copies of one session in a batch are
//! sent once, the newest (each is the whole session). A full queue makes callers wait:
//! that is the backpressure that slows acknowledgements rather than growing memory.
//!
//! A failed or late exchange marks the peer **down**: queued and later items fail at
//! once, so a primary picks another backup instead of waiting on a dead one. Only a
//! probe (an empty batch, sent by the replication's watch task) brings it back **up**,
//! and each return raises the link's **generation**, as does a new incarnation in a
//! reply (the peer restarted and lost its copies): a copy acknowledged under an older
//! generation no longer counts.

use super::wire::{Batch, Item, Replies, Reply};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};

/// Most items in one batch.
pub const MAX_BATCH: usize = 256;
/// Items waiting for a peer before callers wait for room.
const QUEUE: usize = 4_096;
/// Largest reply body read from a peer (a claim's reply carries a whole session).
const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// The path every peer message goes to.
pub const PEER_PATH: &str = "/v1/peer/batch";

/// A reply and the link's generation when it came, or why there was none.
pub type Sent = Result<(Reply, u64), LinkError>;

/// Why an item got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The peer is marked down; nothing was sent.
    #[error("peer {0} is down")]
    Down(String),
    /// The exchange failed or took too long; the peer may or may not have applied it.
    #[error("peer {peer}: {reason}")]
    Failed {
        /// The peer.
        peer: String,
        /// What went wrong.
        reason: String,
    },
}

/// Who this waiter is, as it tells its peers.
#[derive(Debug)]
pub struct Identity {
    /// The waiter's id.
    pub id: String,
    /// Random per process start, so peers notice a restart.
    pub incarnation: u64,
    /// The group's shared secret, sent as a bearer token.
    pub secret: String,
}

#[derive(Debug)]
struct Shared {
    up: AtomicBool,
    generation: AtomicU64,
    /// The peer's incarnation as last seen (0: not yet).
    incarnation: AtomicU64,
    /// Wakes the replication's watch task when the peer goes down, comes back or
    /// restarted.
    changed: Arc<Notify>,
}

impl Shared {
    fn mark_down(&self, peer: &str, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(peer, reason = why, "replication peer down");
            self.changed.notify_one();
        }
    }

    /// Notes the incarnation a reply carried: a new one is a restart.
    fn saw(&self, peer: &str, incarnation: u64) {
        let before = self.incarnation.swap(incarnation, Ordering::AcqRel);
        if before != 0 && before != incarnation {
            self.generation.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(peer, "replication peer restarted: its copies are gone");
            self.changed.notify_one();
        }
    }
}

struct Job {
    item: Item,
    reply: oneshot::Sender<Sent>,
}

/// The line to one peer (see the module docs).
#[derive(Debug)]
pub struct Link {
    /// The peer's id.
    pub id: String,
    /// The peer's HTTP address.
    pub addr: SocketAddr,
    queue: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    me: Arc<Identity>,
    timeout: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl Link {
    /// Starts the line's task. `timeout` bounds one exchange, connecting included.
    pub fn start(
        id: String,
        addr: SocketAddr,
        me: Arc<Identity>,
        timeout: Duration,
        changed: Arc<Notify>,
    ) -> Link {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            up: AtomicBool::new(true),
            generation: AtomicU64::new(1),
            incarnation: AtomicU64::new(0),
            changed,
        });
        let sender = Sender {
            peer: id.clone(),
            addr,
            me: Arc::clone(&me),
            timeout,
            shared: Arc::clone(&shared),
            conn: None,
        };
        tokio::spawn(sender.run(jobs));
        Link {
            id,
            addr,
            queue,
            shared,
            me,
            timeout,
        }
    }

    /// Whether the peer is taken to be there.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// The link's generation (see the module docs).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Sends `item` in the next batch; the reply, and the link's generation when it
    /// came.
    ///
    /// # Errors
    /// [`LinkError::Down`] at once when the peer is down; [`LinkError::Failed`] when the
    /// exchange failed (the peer is then down).
    pub async fn send(&self, item: Item) -> Sent {
        if !self.is_up() {
            return Err(LinkError::Down(self.id.clone()));
        }
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Job { item, reply })
            .await
            .map_err(|_| LinkError::Down(self.id.clone()))?;
        rx.await.map_err(|_| LinkError::Down(self.id.clone()))?
    }

    /// Asks the peer whether it is there (an empty batch on a connection of its own);
    /// marks it up (a new generation) or down. `true` when it answered.
    pub async fn probe(&self) -> bool {
        let answered = tokio::time::timeout(self.timeout, async {
            let mut conn = connect(self.addr).await?;
            exchange(&mut conn, self.addr, &self.me, Vec::new()).await
        })
        .await;
        match answered {
            Ok(Ok(replies)) => {
                self.shared.saw(&self.id, replies.incarnation);
                if !self.shared.up.swap(true, Ordering::AcqRel) {
                    self.shared.generation.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(peer = %self.id, "replication peer up");
                    self.shared.changed.notify_one();
                }
                true
            }
            Ok(Err(e)) => {
                self.shared.mark_down(&self.id, &e);
                false
            }
            Err(_) => {
                self.shared.mark_down(&self.id, "the probe timed out");
                false
            }
        }
    }
}

/// The task behind a [`Link`].
struct Sender {
    peer: String,
    addr: SocketAddr,
    me: Arc<Identity>,
    timeout: Duration,
    shared: Arc<Shared>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Sender {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let taken: Vec<Job> = std::mem::take(&mut batch);
            self.serve(taken).await;
        }
    }

    async fn serve(&mut self, jobs: Vec<Job>) {
        if !self.shared.up.load(Ordering::Acquire) {
            for job in jobs {
                let _receiver_gone = job.reply.send(Err(LinkError::Down(self.peer.clone())));
            }
            return;
        }
        let (items, slots) = coalesce(&jobs);
        let sent = items.len();
        let result = tokio::time::timeout(self.timeout, async {
            if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
                self.conn = Some(connect(self.addr).await?);
            }
            let conn = self.conn.as_mut().expect("connected above");
            exchange(conn, self.addr, &self.me, items).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
        let outcome = match result {
            Ok(replies) if replies.replies.len() == sent => {
                self.shared.saw(&self.peer, replies.incarnation);
                Ok(replies.replies)
            }
            Ok(replies) => Err(format!("{} replies to {sent} items", replies.replies.len())),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(replies) => {
                let generation = self.shared.generation.load(Ordering::Acquire);
                for (job, slot) in jobs.into_iter().zip(slots) {
                    let _receiver_gone = job.reply.send(Ok((replies[slot].clone(), generation)));
                }
            }
            Err(reason) => {
                self.conn = None;
                self.shared.mark_down(&self.peer, &reason);
                for job in jobs {
                    let _receiver_gone = job.reply.send(Err(LinkError::Failed {
                        peer: self.peer.clone(),
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }
}

/// The items to send for `jobs`, and for each job the index of the item answering it:
/// of several copies of one session only the newest is sent.
fn coalesce(jobs: &[Job]) -> (Vec<Item>, Vec<usize>) {
    let mut items: Vec<Item> = Vec::with_capacity(jobs.len());
    let mut slots = Vec::with_capacity(jobs.len());
    let mut copies: HashMap<bistro_store::SessionId, usize> = HashMap::new();
    for job in jobs {
        if let Item::Copy { epoch, snapshot } = &job.item {
            if let Some(&at) = copies.get(&snapshot.session)
                && let Item::Copy {
                    epoch: queued_epoch,
                    snapshot: queued,
                } = &items[at]
                && queued_epoch == epoch
            {
                if snapshot.seq > queued.seq {
                    items[at] = job.item.clone();
                }
                slots.push(at);
                continue;
            }
            copies.insert(snapshot.session, items.len());
        }
        slots.push(items.len());
        items.push(job.item.clone());
    }
    (items, slots)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Copies are small and latency-bound: never wait to fill a packet.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "replication connection ended");
        }
    });
    Ok(sender)
}

/// One request and its replies on `conn`.
async fn exchange(
    conn: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    me: &Identity,
    items: Vec<Item>,
) -> Result<Replies, String> {
    let batch = Batch {
        from: me.id.clone(),
        incarnation: me.incarnation,
        items,
    };
    let body = serde_json::to_vec(&batch).map_err(|e| format!("encode: {e}"))?;
    let request = Request::post(PEER_PATH)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", me.secret))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    conn.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = conn
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reply body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("reply: {e}"))
}
