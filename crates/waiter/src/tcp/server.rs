//! The accept loop and one task per connection.
//!
//! The listener side follows mini-redis: the caller binds, a [`Semaphore`] caps the
//! connections, a cancellation token tells every connection task to stop, and the loop waits
//! for the tasks before returning. Two differences: a second cap counts connections per
//! client address ([`PerIp`]), so one client cannot take every slot; and a client over
//! either cap is not left waiting in the kernel's backlog but told `ERR
//! too-many-connections` and closed, so someone typing into `nc` learns why nothing
//! happens and can try another waiter.
//!
//! A connection task ([`Handler`]) greets, then loops: read a line (racing the idle
//! timer and the shutdown signal), parse it, apply it, answer. A command that has
//! started always finishes and is answered; shutdown and the idle timer only interrupt
//! the wait for the *next* line, and are told to the client as `BYE <kind> <message>`.
//! Every answer must be written within the write timeout ([`Connection`]); a client that
//! does not read its replies is disconnected without a `BYE` (it would not read it).

use crate::Waiter;
use crate::config::Mode;
use crate::tcp::TcpConfig;
use crate::tcp::commands::{self, Command};
use crate::tcp::connection::{Connection, Incoming};
use crate::tcp::conversation::Conversation;
use crate::tcp::per_ip::{PerIp, Place};
use crate::tcp::reply::{Refusal, Reply};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a refused client is given to read its `ERR too-many-connections`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves until `stop` is cancelled; then tells every connection `BYE` and waits for them
/// (at most `request_timeout` + 1 s, the time the last command may still take).
pub(crate) async fn serve(
    listener: TcpListener,
    waiter: Waiter,
    config: TcpConfig,
    stop: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(
        config.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let per_ip = PerIp::new(config.max_connections_per_ip);
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a tcp connection task failed");
                }
                continue;
            }
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        // Per address first: a client at its own cap must not take a global slot,
        // even for a moment.
        let Some(place) = per_ip.admit(peer.ip()) else {
            waiter.metrics().tcp_connection_refused();
            tasks.spawn(refuse(socket, peer, Cap::PerIp(per_ip.limit())));
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            waiter.metrics().tcp_connection_refused();
            tasks.spawn(refuse(socket, peer, Cap::Total(config.max_connections)));
            continue;
        };
        waiter.metrics().tcp_connection_accepted();
        let handler = Handler {
            connection: Connection::new(socket, config.write_timeout),
            waiter: waiter.clone(),
            conversation: Conversation::default(),
            idle_timeout: config.idle_timeout,
            stop: stop.clone(),
            peer,
        };
        tasks.spawn(handler.run(permit, place));
    }
    drop(listener);
    let grace = waiter.config().request_timeout + Duration::from_secs(1);
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a tcp connection task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            open = tasks.len(),
            "tcp connections still busy after the grace period; closing them"
        );
        tasks.shutdown().await;
    }
}

/// The cap a refused connection is over.
#[derive(Debug, Clone, Copy)]
enum Cap {
    /// `max_connections`, over all clients.
    Total(usize),
    /// `max_connections_per_ip`, for the client's address.
    PerIp(usize),
}

impl Cap {
    fn refusal(self) -> Refusal {
        let message = match self {
            Cap::Total(max) => format!(
                "this waiter serves at most {max} TCP connections at once; retry in a moment or connect to another waiter"
            ),
            Cap::PerIp(max) => format!(
                "your address already holds {max} TCP connections to this waiter, its limit per address; close one, or retry in a moment"
            ),
        };
        Refusal::new("too-many-connections", message)
    }
}

async fn refuse(socket: TcpStream, peer: SocketAddr, cap: Cap) {
    let refusal = cap.refusal();
    let mut connection = Connection::new(socket, REFUSAL_TIMEOUT);
    let said = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        connection.write_reply(&Reply::err(refusal)).await?;
        connection.close().await
    })
    .await;
    match said {
        Ok(Ok(())) => tracing::debug!(%peer, ?cap, "tcp connection refused: at a connection limit"),
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "could not tell a refused tcp client why"),
        Err(_) => tracing::debug!(%peer, "a refused tcp client did not read its refusal in time"),
    }
}

/// One client connection's task.
struct Handler {
    connection: Connection<TcpStream>,
    waiter: Waiter,
    conversation: Conversation,
    idle_timeout: Duration,
    stop: CancellationToken,
    peer: SocketAddr,
}

/// Why a connection ended, when the server ends it.
enum Ending {
    /// Said nothing more: the client left, or the socket failed.
    Silent,
    /// Say this last line first.
    Say(String),
}

impl Handler {
    /// Serves the connection; `_permit` and `_place` are its places under the caps,
    /// given back when it ends.
    async fn run(mut self, _permit: OwnedSemaphorePermit, _place: Place) {
        let metrics = self.waiter.metrics();
        metrics.tcp_connection_opened();
        let peer = self.peer;
        tracing::debug!(%peer, "tcp connection opened");
        let ending = match self.converse().await {
            Ok(ending) => ending,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::info!(%peer, error = %e, "tcp client does not read its replies; disconnecting it");
                Ending::Silent
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "tcp connection failed");
                Ending::Silent
            }
        };
        if self.conversation.has_draft() {
            tracing::info!(%peer, "tcp connection ended with an unplaced draft; it is discarded");
        }
        let closed = async {
            if let Ending::Say(line) = ending {
                self.connection.write_line(&line).await?;
            }
            self.connection.close().await
        };
        if let Err(e) = closed.await {
            tracing::debug!(%peer, error = %e, "tcp connection did not close cleanly");
        }
        self.waiter.metrics().tcp_connection_closed();
        tracing::debug!(%peer, "tcp connection closed");
    }

    /// Greets and serves commands until the connection should end.
    async fn converse(&mut self) -> std::io::Result<Ending> {
        let config = self.waiter.config();
        self.connection
            .write_line(&format!(
                "OK bistro waiter={} mode={} protocol=1; HELP lists the commands",
                config.id, config.mode
            ))
            .await?;
        loop {
            let incoming = tokio::select! {
                read = tokio::time::timeout(self.idle_timeout, self.connection.read_line()) => read,
                () = self.stop.cancelled() => return Ok(Ending::Say(self.bye(
                    "shutting-down",
                    "the waiter is shutting down; reconnect to continue",
                ))),
            };
            let line = match incoming {
                Err(_elapsed) => {
                    let message = format!(
                        "no command for {} s; closing the connection",
                        self.idle_timeout.as_secs()
                    );
                    return Ok(Ending::Say(self.bye("idle-timeout", &message)));
                }
                Ok(read) => match read? {
                    Incoming::Line(line) => line,
                    Incoming::Closed => return Ok(Ending::Silent),
                    Incoming::TooLong => {
                        let reply = Reply::err(Refusal::line_too_long());
                        self.waiter
                            .metrics()
                            .tcp_command("unknown", reply.result_label());
                        self.connection.write_reply(&reply).await?;
                        return Ok(Ending::Silent);
                    }
                },
            };
            let (name, reply) = match Command::parse(&line) {
                Ok(None) => continue,
                Ok(Some(command)) => {
                    let name = command.name();
                    (
                        name,
                        command.apply(&self.waiter, &mut self.conversation).await,
                    )
                }
                Err(e) => (commands::label(&line), Reply::err(Refusal::parse(&e))),
            };
            self.waiter
                .metrics()
                .tcp_command(name, reply.result_label());
            self.connection.write_reply(&reply).await?;
            if reply.closes() {
                return Ok(Ending::Silent);
            }
        }
    }

    /// `BYE <kind> <message>`, mentioning a draft that is about to be lost.
    fn bye(&self, kind: &str, message: &str) -> String {
        let lost = if self.conversation.has_draft() && self.waiter.config().mode == Mode::Stateful {
            "; the unplaced draft on this connection is discarded"
        } else {
            ""
        };
        format!("BYE {kind} {message}{lost}")
    }
}
