//! Loopback ports for the processes the lab starts (starting, signalling and stopping
//! them is [`bistro_supervise`]'s).

use crate::error::LabError;

/// A loopback port that was free a moment ago, for servers that cannot report the port
/// they bound (redis-server).
///
/// # Errors
/// [`LabError::Io`] when no port can be bound at all.
pub fn free_port() -> Result<u16, LabError> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct loopback ports that were free a moment ago, for processes that must
/// know each other's addresses before they start (a replicated group's `--peer`s). All
/// are held while the next is taken, so none is handed out twice.
///
/// # Errors
/// [`LabError::Io`] when a port cannot be bound.
pub fn free_ports(n: usize) -> Result<Vec<u16>, LabError> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>();
    held.and_then(|listeners| {
        listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect()
    })
    .map_err(|source| LabError::Io {
        path: "127.0.0.1:0".into(),
        source,
    })
}
