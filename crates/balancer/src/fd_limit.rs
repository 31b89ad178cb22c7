//! The process's file-descriptor limit (`RLIMIT_NOFILE`).
//!
//! Every client connection, every upstream connection and every health probe is a file
//! descriptor. Distributions start processes with a soft limit of 1024 and a much higher
//! hard limit; a balancer that keeps the soft one runs out at about a thousand clients.
//! [`raise_fd_limit`] lifts the soft limit to the hard one, as nginx
//! (`worker_rlimit_nofile`) and HAProxy (from `maxconn`) do at start, and the balancer
//! then sizes its client-connection cap to what the limit can hold.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// A file-descriptor limit: the soft one in force and the hard ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The limit in force.
    pub soft: u64,
    /// The most the soft limit may be raised to (without privileges).
    pub hard: u64,
}

/// The current limit; `None` when it is unlimited.
pub fn fd_limit() -> Option<FdLimit> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    Some(FdLimit {
        soft: current?,
        hard: maximum.unwrap_or(u64::MAX),
    })
}

/// Raises the soft limit to the hard limit; returns the limit now in force.
///
/// # Errors
/// The operating system's error when the limit cannot be changed.
pub fn raise_fd_limit() -> std::io::Result<Option<FdLimit>> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(fd_limit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let raised = raise_fd_limit().unwrap();
        if let Some(limit) = raised {
            assert_eq!(limit.soft, limit.hard, "{limit:?}");
        }
    }
}
