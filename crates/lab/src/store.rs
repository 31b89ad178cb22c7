//! The central store of one architecture, as the lab provides it.
//!
//! - SQLite: a fresh database file in a private temporary directory (removed afterwards),
//!   so runs never see each other's orders and nothing is left behind.
//! - Redis the lab starts: a private `redis-server` on a free loopback port, with no
//!   snapshots; `durable` adds an append-only file with an fsync per write. Because the
//!   lab owns this process it can stop and start it as a fault.
//! - A URL (`postgres://...`, `redis://...`): a server someone else runs. The lab only
//!   passes it to the waiters, and never stops it.

use crate::error::LabError;
use crate::process::free_port;
use crate::scenario::StoreSpec;
use bistro_supervise::{Proc, Readiness, Spec};
use std::path::Path;
use std::time::Duration;

/// A private temporary directory (`tempfile`'s), removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates `bistro-lab-<tag>-XXXXXX` under the system's temporary directory.
    ///
    /// # Errors
    /// [`LabError::Io`] when it cannot be created.
    pub fn new(tag: &str) -> Result<TempDir, LabError> {
        tempfile::Builder::new()
            .prefix(&format!("bistro-lab-{tag}-"))
            .tempdir()
            .map(TempDir)
            .map_err(|source| LabError::Io {
                path: std::env::temp_dir(),
                source,
            })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The store of a running architecture.
pub enum Store {
    /// Stateful: no central store.
    None,
    /// A SQLite file in a temporary directory.
    Sqlite {
        /// `sqlite://<dir>/orders.db`.
        url: String,
        /// Removed when the store is dropped.
        _dir: TempDir,
    },
    /// A `redis-server` the lab runs.
    LabRedis {
        /// `redis://127.0.0.1:<port>/`.
        url: String,
        /// Its port (kept across a stop and start).
        port: u16,
        /// Its data directory.
        dir: TempDir,
        /// Append-only file with fsync per write.
        durable: bool,
        /// The process, `None` while stopped (boxed: it is much larger than the
        /// other variants).
        proc: Option<Box<Proc>>,
    },
    /// A server the lab does not own.
    External {
        /// The URL passed to the waiters.
        url: String,
    },
}

impl Store {
    /// Provides the store `spec` asks for (starting redis-server if needed).
    ///
    /// # Errors
    /// [`LabError`] when the directory cannot be made or redis-server does not start.
    pub async fn provide(
        spec: &StoreSpec,
        tag: &str,
        ready_timeout: Duration,
    ) -> Result<Store, LabError> {
        Ok(match spec {
            StoreSpec::Memory => Store::None,
            StoreSpec::Sqlite => {
                let dir = TempDir::new(tag)?;
                let url = format!("sqlite://{}", dir.path().join("orders.db").display());
                Store::Sqlite { url, _dir: dir }
            }
            StoreSpec::LabRedis { durable } => {
                let dir = TempDir::new(tag)?;
                let port = free_port()?;
                let mut store = Store::LabRedis {
                    url: format!("redis://127.0.0.1:{port}/"),
                    port,
                    dir,
                    durable: *durable,
                    proc: None,
                };
                store.start(ready_timeout).await?;
                store
            }
            StoreSpec::Url(url) => Store::External { url: url.clone() },
        })
    }

    /// The `--store` URL for the waiters, if any.
    pub fn url(&self) -> Option<&str> {
        match self {
            Store::None => None,
            Store::Sqlite { url, .. } | Store::LabRedis { url, .. } | Store::External { url } => {
                Some(url)
            }
        }
    }

    /// The store's process id, if the lab runs one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Store::LabRedis { proc: Some(p), .. } => Some(p.pid()),
            _ => None,
        }
    }

    /// Starts the lab's redis-server (again) on its port. A no-op for other stores.
    ///
    /// # Errors
    /// [`LabError`] when redis-server does not start.
    pub async fn start(&mut self, ready_timeout: Duration) -> Result<(), LabError> {
        let Store::LabRedis {
            port,
            dir,
            durable,
            proc,
            ..
        } = self
        else {
            return Ok(());
        };
        if proc.is_some() {
            return Ok(());
        }
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--dir".to_string(), dir.path().display().to_string()]);
        if *durable {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        let spec = Spec::new("redis-server", "redis-server")
            .args(&args)
            .readiness(Readiness::Marker("Ready to accept connections".into()));
        let (p, _) = Proc::start(&spec, ready_timeout).await?;
        *proc = Some(Box::new(p));
        Ok(())
    }

    /// Kills the lab's redis-server (SIGKILL, like a crash). A no-op for other stores.
    pub async fn stop(&mut self) {
        if let Store::LabRedis { proc, .. } = self
            && let Some(mut p) = proc.take()
        {
            p.kill();
        }
    }
}

/// Where a store URL points: its host and port, and where they sit in the URL, so a
/// delay proxy's address can be put in their place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as written (brackets of an IPv6 address removed).
    pub host: String,
    /// The port as written, or the scheme's default.
    pub port: u16,
    /// The byte range of `host[:port]` in the URL.
    span: std::ops::Range<usize>,
}

impl Endpoint {
    /// Reads the endpoint of a `postgres://`, `postgresql://` or `redis://` URL.
    ///
    /// # Errors
    /// [`LabError::Scenario`] for a URL a TCP proxy cannot stand in front of: a Unix
    /// socket (no host, or `host=` in the query), several hosts, or an unknown scheme.
    pub fn of(url: &str) -> Result<Endpoint, LabError> {
        let bad = |why: &str| {
            LabError::scenario(format!(
                "a store distance needs a store reached over TCP at one host and port, and {url:?} {why}"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("is not a URL"))?;
        let default_port = match scheme {
            "postgres" | "postgresql" => 5432,
            "redis" => 6379,
            _ => return Err(bad("has a scheme other than postgres:// or redis://")),
        };
        let start = scheme.len() + 3;
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        let host_from = authority.rfind('@').map_or(0, |at| at + 1);
        let hostport = &authority[host_from..];
        if url[start + authority_len..]
            .split(['?', '&'])
            .any(|p| p.starts_with("host=") || p.starts_with("hostaddr="))
        {
            return Err(bad("names its host in the query"));
        }
        if hostport.contains(',') {
            return Err(bad("names several hosts"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed [ in its host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host (a Unix socket)"));
        }
        let port = match port {
            None | Some("") => default_port,
            Some(p) => p
                .parse()
                .map_err(|_| bad("has a port that is not a number"))?,
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
            span: start + host_from..start + authority_len,
        })
    }

    /// `url` with this endpoint replaced by `addr`.
    pub fn replaced(&self, url: &str, addr: std::net::SocketAddr) -> String {
        format!("{}{addr}{}", &url[..self.span.start], &url[self.span.end..])
    }

    /// The endpoint's address: the first its host resolves to that accepts a
    /// connection, else the first. (A proxy forwards to one address, where the store's
    /// own client would try each: `localhost` may resolve to `::1` first while the
    /// server listens on 127.0.0.1 only.)
    ///
    /// # Errors
    /// [`LabError::Scenario`] when the host does not resolve.
    pub async fn resolve(&self) -> Result<std::net::SocketAddr, LabError> {
        let fail = |why: String| {
            LabError::scenario(format!(
                "cannot put the store at a distance: {}:{} {why}",
                self.host, self.port
            ))
        };
        let addrs: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| fail(format!("does not resolve: {e}")))?
                .collect();
        for &addr in &addrs {
            let probe = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Ok(addr);
            }
        }
        addrs
            .first()
            .copied()
            .ok_or_else(|| fail("resolves to no address".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_points_at_its_host_and_port_and_can_point_at_a_proxy_instead() {
        let proxy: std::net::SocketAddr = "127.0.0.1:40001".parse().unwrap();
        for (url, host, port, rewritten) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "127.0.0.1",
                5432,
                "postgres://postgres@127.0.0.1:40001/postgres",
            ),
            (
                "postgresql://u:p@db.example:6000/orders?sslmode=disable",
                "db.example",
                6000,
                "postgresql://u:p@127.0.0.1:40001/orders?sslmode=disable",
            ),
            (
                "redis://127.0.0.1:6379/",
                "127.0.0.1",
                6379,
                "redis://127.0.0.1:40001/",
            ),
            (
                "redis://:secret@localhost",
                "localhost",
                6379,
                "redis://:secret@127.0.0.1:40001",
            ),
            (
                "postgres://u@[::1]/db",
                "::1",
                5432,
                "postgres://u@127.0.0.1:40001/db",
            ),
        ] {
            let e = Endpoint::of(url).unwrap();
            assert_eq!((e.host.as_str(), e.port), (host, port), "{url}");
            assert_eq!(e.replaced(url, proxy), rewritten);
        }
        for url in [
            "postgres:///orders",
            "postgres://u@/orders?host=/var/run/postgresql",
            "postgres://h1:5432,h2:5432/orders",
            "redis://127.0.0.1:port/",
            "sqlite:///tmp/x.db",
        ] {
            let e = Endpoint::of(url).expect_err(url).to_string();
            assert!(e.contains("store distance"), "{url}: {e}");
        }
    }

    #[tokio::test]
    async fn a_host_resolves_to_the_address_that_accepts_connections() {
        // Listening on IPv4 only: `localhost` may list ::1 first, where nothing listens.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let e = Endpoint::of(&format!("redis://localhost:{port}/")).unwrap();
        assert_eq!(
            e.resolve().await.unwrap(),
            std::net::SocketAddr::from(([127, 0, 0, 1], port))
        );
    }
}
