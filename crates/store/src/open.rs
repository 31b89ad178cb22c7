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
    Sqlite {
        /// The database file's path, what follows `sqlite://`, as given.
        path: String,
    },
    /// A PostgreSQL connection URL.
    Postgres {
        /// The whole URL, `postgres://` or `postgresql://` included, as the driver
        /// takes it. It may hold a password: log the `StoreUrl` (its `Display` removes
        /// it), not this field.
        url: String,
    },
    /// A Redis connection URL.
    Redis {
        /// The whole URL, `redis://` included, as the driver takes it. It may hold a
        /// password: log the `StoreUrl` (its `Display` removes it), not this field.
        url: String,
    },
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
            return StoreUrl::Sqlite {
                path: path.to_string(),
            }
            .built();
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return StoreUrl::Postgres { url: s.to_string() }.built();
        }
        if s.starts_with("redis://") {
            return StoreUrl::Redis { url: s.to_string() }.built();
        }
        Err(StoreError::Config(format!(
            "unsupported store URL {:?}; use memory, sqlite://PATH, postgres://USER@HOST/DB or redis://HOST:PORT",
            redact(s)
        )))
    }

    /// `self`, if this build has its backend: each central backend is a cargo feature
    /// (`sqlite`, `postgres`, `redis`).
    ///
    /// # Errors
    /// [`StoreError::Config`] naming the feature to rebuild with.
    pub fn built(self) -> Result<StoreUrl, StoreError> {
        let (built, name, feature) = match self {
            StoreUrl::Memory => return Ok(self),
            StoreUrl::Sqlite { .. } => (cfg!(feature = "sqlite"), "SQLite", "sqlite"),
            StoreUrl::Postgres { .. } => (cfg!(feature = "postgres"), "PostgreSQL", "postgres"),
            StoreUrl::Redis { .. } => (cfg!(feature = "redis"), "Redis", "redis"),
        };
        if built {
            Ok(self)
        } else {
            Err(StoreError::Config(format!(
                "this build of bistro has no {name} support; rebuild with --features {feature}"
            )))
        }
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
    Ok(match url.clone().built()? {
        StoreUrl::Memory => Arc::new(MemoryStore::new(config)),
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite { path } => Arc::new(crate::SqliteStore::open(&path, config).await?),
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres { url } => Arc::new(crate::PostgresStore::connect(&url, config).await?),
        #[cfg(feature = "redis")]
        StoreUrl::Redis { url } => Arc::new(crate::RedisStore::connect(&url, config).await?),
        #[allow(unreachable_patterns)]
        _ => unreachable!("built() refuses the backends this build left out"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(feature = "sqlite", feature = "postgres", feature = "redis"))]
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

    /// A backend left out of the build is refused by name, at parse time and at open.
    #[tokio::test]
    async fn a_backend_left_out_says_which_feature_brings_it() {
        for (url, feature, built) in [
            ("sqlite://x.db", "sqlite", cfg!(feature = "sqlite")),
            ("postgres://u@h/db", "postgres", cfg!(feature = "postgres")),
            (
                "postgresql://u@h/db",
                "postgres",
                cfg!(feature = "postgres"),
            ),
            ("redis://h:6379/", "redis", cfg!(feature = "redis")),
        ] {
            match StoreUrl::parse(url) {
                Ok(_) => assert!(built, "{url} parsed without its feature"),
                Err(StoreError::Config(e)) => {
                    assert!(!built, "{url}: {e}");
                    assert!(e.starts_with("this build of bistro has no "), "{e}");
                    assert!(
                        e.ends_with(&format!("rebuild with --features {feature}")),
                        "{e}"
                    );
                }
                Err(e) => panic!("{url}: {e}"),
            }
        }
        #[cfg(not(feature = "postgres"))]
        {
            let url = StoreUrl::Postgres {
                url: "postgres://u@h/db".into(),
            };
            let e = open(&url, StoreConfig::default()).await.err().unwrap();
            assert!(e.to_string().contains("--features postgres"), "{e}");
        }
    }
}
