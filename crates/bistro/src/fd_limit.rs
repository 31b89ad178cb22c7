//! Raising the file-descriptor limit at start, for the servers (`bistro waiter`,
//! `bistro balancer`): each connection is a descriptor, and the usual soft limit of
//! 1024 would cap a server at about a thousand clients.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the result; a failure is
/// logged and the server runs with the limit it has.
pub fn raise(what: &str) {
    match bistro_balancer::raise_fd_limit() {
        Ok(Some(limit)) => tracing::info!(
            server = what,
            soft = limit.soft,
            hard = limit.hard,
            "file-descriptor limit"
        ),
        Ok(None) => tracing::info!(server = what, "file-descriptor limit: unlimited"),
        Err(e) => tracing::warn!(
            server = what,
            error = %e,
            "could not raise the file-descriptor limit; running with the current one"
        ),
    }
}
