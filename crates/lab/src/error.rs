//! What can stop a lab run, and what the operator should do about it.
//!
//! A lab run fails only when it cannot produce honest numbers: the scenario is invalid,
//! a process it needs does not start, or the report cannot be written. Things that go
//! wrong *inside* the experiment (a waiter dies, a request times out, an order is lost)
//! are not errors: they are what the lab measures, and they end up in the report.

use std::path::PathBuf;

/// Why a lab run (or a scenario) was refused or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The scenario file is not valid; the message names the field and the fix.
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// A process the lab needs could not be started, did not get ready, or could not
    /// be signalled.
    #[error(transparent)]
    Process(#[from] bistro_supervise::Error),
    /// Reading or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// A delay proxy (a network distance in front of a store, waiter or peer) could not
    /// be started.
    #[error("cannot start the delay proxy for {name} (in front of {target}): {source}")]
    Proxy {
        /// Which link, e.g. `store` or `waiter w2`.
        name: String,
        /// The address it was to forward to.
        target: std::net::SocketAddr,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The run was cancelled (Ctrl-C); every process the lab started has been stopped.
    #[error("the lab run was cancelled; every process it started has been stopped")]
    Cancelled,
    /// An end-to-end check found the lab's numbers contradicting what the architectures
    /// guarantee (see [`crate::end_to_end_check`]).
    #[error("end-to-end check failed: {0}")]
    Check(String),
}

impl LabError {
    /// A scenario error with a message.
    pub(crate) fn scenario(msg: impl Into<String>) -> LabError {
        LabError::Scenario(msg.into())
    }
}
