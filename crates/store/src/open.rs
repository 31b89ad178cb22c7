//! Store URLs (`memory`, `sqlite://PATH`, `postgres://...`, `redis://...`) and opening
//! the matching backend.

use crate::{MemoryStore, OrderStore, StoreConfig, StoreError};
use std::fmt;
use std::sync::Arc;

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// This process's memory (stateful mode).
    Memory,
    /// A SQLite database file, shared by waiters on one machine.
    Sqlite { path: String },
    /// A PostgreSQL connection URL.
    Postgres { url: String },
    /// A Redis connection URL.
    Redis { url: String },
}

impl StoreUrl {
    /// Parses a store URL.
    ///
    /// # Errors
    /// [`StoreError::Config`] naming the accepted forms.
    pub fn parse(s: &str) -> Result<StoreUrl, StoreError> {
        let s = s.trim();
        if s == "memory" || s == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Config(
                    "sqlite:// needs a file path, e.g. sqlite://bistro.db".into(),
                ));
            }
            return Ok(StoreUrl::Sqlite {
                path: path.to_string(),
            });
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres { url: s.to_string() });
        }
        if s.starts_with("redis://") {
            return Ok(StoreUrl::Redis { url: s.to_string() });
        }
        Err(StoreError::Config(format!(
            "unsupported store URL {:?}; use memory, sqlite://PATH, postgres://USER@HOST/DB or redis://HOST:PORT",
            redact(s)
        )))
    }

    /// The backend name (`memory`, `sqlite`, `postgres`, `redis`).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreUrl::Memory => "memory",
            StoreUrl::Sqlite { .. } => "sqlite",
            StoreUrl::Postgres { .. } => "postgres",
            StoreUrl::Redis { .. } => "redis",
        }
    }
}

impl fmt::Display for StoreUrl {
    /// The URL with any password removed, safe to log and to show in `/v1/waiter`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Sqlite { path } => write!(f, "sqlite://{path}"),
            StoreUrl::Postgres { url } | StoreUrl::Redis { url } => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Removes the password from `scheme://user:password@host/...`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

/// Opens (and for central stores, connects to and migrates) the store at `url`.
///
/// # Errors
/// [`StoreError::Config`] for a bad URL, [`StoreError::Unavailable`] when the backend
/// cannot be reached or migrated.
pub async fn open(url: &StoreUrl, config: StoreConfig) -> Result<Arc<dyn OrderStore>, StoreError> {
    Ok(match url {
        StoreUrl::Memory => Arc::new(MemoryStore::new(config)),
        StoreUrl::Sqlite { path } => Arc::new(crate::SqliteStore::open(path, config).await?),
        StoreUrl::Postgres { url } => Arc::new(crate::PostgresStore::connect(url, config).await?),
        StoreUrl::Redis { url } => Arc::new(crate::RedisStore::connect(url, config).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_redacts_passwords() {
        assert_eq!(StoreUrl::parse("memory").unwrap(), StoreUrl::Memory);
        assert_eq!(
            StoreUrl::parse("sqlite://bistro.db").unwrap().kind(),
            "sqlite"
        );
        let pg = StoreUrl::parse("postgres://bob:secret@db:5432/bistro").unwrap();
        assert_eq!(pg.to_string(), "postgres://bob:***@db:5432/bistro");
        let redis = StoreUrl::parse("redis://:pw@127.0.0.1:6379/0").unwrap();
        assert_eq!(redis.to_string(), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(
            StoreUrl::parse("redis://127.0.0.1").unwrap().to_string(),
            "redis://127.0.0.1"
        );
        assert!(matches!(
            StoreUrl::parse("mysql://x"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            StoreUrl::parse("sqlite://"),
            Err(StoreError::Config(_))
        ));
    }
}
