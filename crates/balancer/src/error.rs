//! The balancer's errors, typed so callers can decide on them.
//!
//! Three kinds of failure exist and each has its own type:
//!
//! - [`ConfigError`]: the configuration (TOML, `--backend` flags, admin requests that
//!   add a backend) is invalid. Said in words the operator can act on.
//! - [`BalancerError`]: [`run`](crate::run) could not start or stopped abnormally.
//! - [`ProxyError`]: one proxied exchange failed. Following pingora, it says *where* the
//!   failure came from ([`Origin`]) and whether the request may safely be sent again
//!   ([`RetrySafety`]); the retry logic matches on exactly these two answers.

pub use crate::framing::FramingError;
use crate::h1::UpstreamError;
use std::net::SocketAddr;
use std::time::Duration;

/// An invalid configuration value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML document does not parse or has unknown or mistyped fields.
    #[error("invalid balancer configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// A `--backend` flag does not have the form `id=host:port[,weight=N][,mode=M]`.
    #[error(
        "invalid --backend {flag:?}: {reason}; expected id=host:port[,weight=N][,mode=stateful|stateless]"
    )]
    BackendFlag {
        /// The flag as given.
        flag: String,
        /// What is wrong with it.
        reason: String,
    },
    /// One field has a value outside what the balancer accepts.
    #[error("invalid value for {field}: {reason}")]
    Invalid {
        /// The field, as a TOML path (e.g. `health.rise`).
        field: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// Two backends share one id; ids name sessions in affinity tokens, so they must be unique.
    #[error("backend id {0:?} is used twice; every backend needs its own id")]
    DuplicateBackend(String),
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why [`run`](crate::run) could not start or did not finish cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The admin listener is bound to a non-loopback address but no admin token is set.
    #[error(
        "the admin API listens on {addr}, which is not a loopback address, and no admin token is configured; \
         set admin.token (clients then send `Authorization: Bearer <token>`) or bind the admin API to 127.0.0.1"
    )]
    AdminTokenRequired {
        /// The admin listener's address.
        addr: SocketAddr,
    },
    /// A listener could not be prepared, or a worker could not start.
    #[error("{what}: {source}")]
    Io {
        /// What the balancer was doing.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A worker thread panicked; the balancer stopped the others and gave up.
    #[error("proxy worker {0} panicked; see the log for the panic message")]
    WorkerPanicked(usize),
}

/// Where a failed exchange went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The backend (waiter): connection refused, reset, timed out, bad response.
    Upstream,
    /// The client (diner): bad or too large request, body aborted.
    Downstream,
    /// The balancer itself: no backend available, configuration.
    Internal,
}

/// Whether a failed request may be sent (again) to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySafety {
    /// The request never reached a backend: any request may be sent elsewhere.
    NotSent,
    /// The request may have reached the backend: only idempotent requests (or those
    /// carrying `Idempotency-Key`) may be sent again.
    MaybeSent,
    /// Sending it again cannot help (the client's fault, or nothing to send to).
    Never,
}

/// One proxied exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The TCP connection (or the HTTP handshake) to the backend failed.
    #[error("could not connect to waiter {backend} ({addr}): {source}")]
    Connect {
        /// The backend's id.
        backend: String,
        /// Its address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The backend did not accept the connection within the connect timeout.
    #[error("waiter {backend} did not accept a connection within {timeout:?}")]
    ConnectTimeout {
        /// The backend's id.
        backend: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The connection failed before any byte of the request was written (e.g. a
    /// pooled connection the backend had just closed).
    #[error("the connection to waiter {backend} closed before the request was sent: {source}")]
    NotSent {
        /// The backend's id.
        backend: String,
        /// What failed.
        source: UpstreamError,
    },
    /// The exchange failed after the request was (at least partly) written.
    #[error("the exchange with waiter {backend} failed after the request was sent: {source}")]
    Exchange {
        /// The backend's id.
        backend: String,
        /// What failed: the connection, or a response that breaks HTTP/1.1.
        source: UpstreamError,
    },
    /// The balancer itself ran out of a resource (file descriptors, ports, memory)
    /// while connecting: the balancer's trouble, never the backend's.
    #[error("the balancer is out of resources connecting to waiter {backend}: {source}")]
    LocalResources {
        /// The backend's id.
        backend: String,
        /// The operating system's error (`EMFILE`, `ENFILE`, `EADDRNOTAVAIL`, ...).
        source: std::io::Error,
    },
    /// Every connection slot of the backend was busy and the request could not wait
    /// for one: the queue was full, or it waited `waited` (the queue timeout).
    #[error("waiter {backend} had no free connection slot{}", waited.map(|w| format!(" within {w:?}")).unwrap_or_else(|| " and its queue is full".into()))]
    QueueFull {
        /// The backend's id.
        backend: String,
        /// How long the request waited, when it timed out in the queue.
        waited: Option<Duration>,
    },
    /// The backend went down (its health checks failed) while the request waited for
    /// it; `sent` says whether the request had left.
    #[error("waiter {backend} went down while the request waited for it")]
    BackendDown {
        /// The backend's id.
        backend: String,
        /// Whether the request had been written to the backend.
        sent: bool,
    },
    /// The backend sent no response head within the response timeout.
    #[error("waiter {backend} sent no response within {timeout:?}")]
    ResponseTimeout {
        /// The backend's id.
        backend: String,
        /// The configured response timeout.
        timeout: Duration,
    },
    /// The client's request body is larger than allowed.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The client's body did not arrive in time (total time or minimum rate).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Reading the client's request body failed.
    #[error("could not read the request body from the client: {0}")]
    ClientBody(hyper::Error),
    /// The request's framing is ambiguous (see the `framing` module).
    #[error("{0}")]
    Framing(FramingError),
    /// The request head (request line and header fields) is larger than
    /// `client.max_header_bytes`.
    #[error("the request head is {size} bytes, over the limit of {limit}")]
    HeadTooLarge {
        /// The head's size as counted (each field's name, value and 4 bytes of framing).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No backend is available for a new request.
    #[error("no waiter is available")]
    NoBackend,
}

impl ProxyError {
    /// Where the failure came from.
    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::NotSent { .. }
            | ProxyError::Exchange { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::BackendDown { .. } => Origin::Upstream,
            ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyTimeout
            | ProxyError::ClientBody(_)
            | ProxyError::Framing(_)
            | ProxyError::HeadTooLarge { .. } => Origin::Downstream,
            ProxyError::NoBackend
            | ProxyError::LocalResources { .. }
            | ProxyError::QueueFull { .. } => Origin::Internal,
        }
    }

    /// Whether the request may be sent again, and under which condition.
    pub fn retry_safety(&self) -> RetrySafety {
        match self {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::NotSent { .. } => RetrySafety::NotSent,
            // A timed-out request may still be running on the backend; retrying it would
            // double the load exactly when the backend is slow, so it is not retried.
            ProxyError::ResponseTimeout { .. } => RetrySafety::Never,
            ProxyError::Exchange { .. } => RetrySafety::MaybeSent,
            ProxyError::BackendDown { sent: false, .. } => RetrySafety::NotSent,
            ProxyError::BackendDown { sent: true, .. } => RetrySafety::MaybeSent,
            // The balancer's own limits: another backend would meet the same ones (a
            // full queue means the strategy's best choice is saturated).
            ProxyError::LocalResources { .. } | ProxyError::QueueFull { .. } => RetrySafety::Never,
            ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyTimeout
            | ProxyError::ClientBody(_)
            | ProxyError::Framing(_)
            | ProxyError::HeadTooLarge { .. }
            | ProxyError::NoBackend => RetrySafety::Never,
        }
    }

    /// Whether the failure counts against the backend's health (passive ejection).
    /// Only the backend's own failures do: never the balancer's resources, limits or
    /// queue, never the client's, and not a backend already found down.
    pub fn blames_backend(&self) -> bool {
        self.origin() == Origin::Upstream && !matches!(self, ProxyError::BackendDown { .. })
    }

    /// Whether the backend refused the connection: nothing listens there any more.
    pub fn is_refused(&self) -> bool {
        matches!(self, ProxyError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }

    /// The health verdict this failure stands for, when it blames the backend.
    pub(crate) fn down_reason(&self) -> crate::health::DownReason {
        use crate::health::DownReason;
        match self {
            _ if self.is_refused() => DownReason::Refused,
            ProxyError::ConnectTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                DownReason::Timeout
            }
            _ => DownReason::Failing,
        }
    }
}

/// Whether a socket error means the *balancer* ran out of something (file
/// descriptors, local ports, kernel buffers, memory) rather than that the peer failed.
pub(crate) fn is_local_exhaustion(error: &std::io::Error) -> bool {
    use rustix::io::Errno;
    if error.kind() == std::io::ErrorKind::OutOfMemory {
        return true;
    }
    matches!(
        Errno::from_io_error(error),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM | Errno::ADDRNOTAVAIL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_safe_to_retry_anywhere() {
        let e = ProxyError::ConnectTimeout {
            backend: "w1".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(e.retry_safety(), RetrySafety::NotSent);
        assert_eq!(e.origin(), Origin::Upstream);
        assert!(e.blames_backend());
    }

    #[test]
    fn the_balancers_own_trouble_never_blames_a_backend() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(is_local_exhaustion(&emfile));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_local_exhaustion(&refused));
        for e in [
            ProxyError::LocalResources {
                backend: "w1".into(),
                source: emfile,
            },
            ProxyError::QueueFull {
                backend: "w1".into(),
                waited: Some(Duration::from_secs(5)),
            },
            ProxyError::BackendDown {
                backend: "w1".into(),
                sent: true,
            },
            ProxyError::BodyTimeout,
        ] {
            assert!(!e.blames_backend(), "{e}");
        }
        let gone = ProxyError::Connect {
            backend: "w1".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            source: refused,
        };
        assert!(gone.blames_backend() && gone.is_refused());
        assert_eq!(gone.down_reason(), crate::health::DownReason::Refused);
    }

    #[test]
    fn client_faults_are_never_retried_and_do_not_blame_the_backend() {
        let e = ProxyError::BodyTooLarge { limit: 10 };
        assert_eq!(e.retry_safety(), RetrySafety::Never);
        assert_eq!(e.origin(), Origin::Downstream);
        assert!(!e.blames_backend());
    }
}
