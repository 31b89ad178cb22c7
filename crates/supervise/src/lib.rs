//! `bistro-supervise`: the one way bistro starts, watches and stops its own processes.
//!
//! The lab, `bistro up`, the benchmarks and the integration tests all start waiters,
//! balancers, stores and peer proxies as child processes. They used to do it four ways;
//! now every one of them goes through [`Proc`], so the rules below hold everywhere:
//!
//! - **Readiness is a handshake, not a log line.** A bistro child is started with
//!   `--ready-json` and prints one JSON line on stdout once it accepts connections
//!   ([`bistro_proto::Ready`]); the supervisor learns its addresses from that line (the
//!   children bind port 0). A third-party child (redis-server) is ready at a marker line.
//!   See [`Readiness`].
//! - **No child outlives its supervisor.** Each child asks the kernel for SIGTERM when
//!   its parent dies, however it dies ([`die_with_parent`]: a SIGKILLed lab left its
//!   waiters running once); a dropped [`Proc`] SIGKILLs its group and reaps it.
//! - **Process groups.** Each child leads a process group of its own, and signals go to
//!   the group, so what a child started (nginx's workers, a shell's `exec`) stops with it,
//!   and a terminal's Ctrl-C reaches only the supervisor, which stops its children in
//!   order instead of them racing it.
//! - **One stop deadline.** [`stop_all`] sends SIGTERM to every child at once and gives
//!   them one shared grace period, then SIGKILLs the rest: stopping ten processes costs
//!   one grace period, not ten.
//! - **One signal API** ([`send_signal`], kill(2) through rustix): no `unsafe`, no
//!   shelling out to `kill`.
//!
//! The child's side of the handshake is [`announce`].

#![warn(missing_docs)]

mod process;
mod signal;

pub use process::{Output, Proc, Readiness, Spec, Stopped, stop_all, stop_all_blocking};
pub use signal::{Signal, die_with_parent, send_signal};

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Why a child could not be started, did not get ready, or could not be signalled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process could not be started at all (missing binary, permissions).
    #[error(
        "cannot start {what} ({program}): {source}; check that the program exists and is executable"
    )]
    Spawn {
        /// Which process, e.g. `waiter w2`.
        what: String,
        /// The program that was run.
        program: PathBuf,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The process started but exited before it was ready (or while it was checked on).
    #[error("{what} exited ({status}) before it was ready; its last output:\n{log}")]
    Exited {
        /// Which process.
        what: String,
        /// Its exit status.
        status: String,
        /// The last lines it wrote.
        log: String,
    },
    /// The process did not say it was ready in time.
    #[error("{what} did not become ready within {waited:?}; its last output:\n{log}")]
    NotReady {
        /// Which process.
        what: String,
        /// How long the supervisor waited.
        waited: Duration,
        /// The last lines it wrote.
        log: String,
    },
    /// A signal could not be delivered.
    #[error("cannot send SIG{signal} to {what}: {detail}")]
    Signal {
        /// Which process.
        what: String,
        /// The signal's name without `SIG`.
        signal: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// The child's side of the handshake: prints `ready` as its line on stdout and flushes
/// it (`bistro waiter`, `bistro balancer` and the benchmark's baseline server call this
/// when started with `--ready-json`).
pub fn announce(ready: &bistro_proto::Ready) {
    let mut out = std::io::stdout().lock();
    // A supervisor that closed our stdout is not waiting for the line: nothing to do.
    if let Err(e) = writeln!(out, "{}", ready.to_line()).and_then(|()| out.flush()) {
        tracing::debug!(error = %e, "could not print the readiness line");
    }
}

/// 128 bits from the operating system's generator (through rand's thread-local CSPRNG)
/// as 32 hex characters: the secrets bistro hands the processes it starts itself (an
/// admin token for `bistro up`'s balancer, a peer secret, a benchmark's affinity key).
pub fn random_hex() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_hex_and_differ() {
        let (a, b) = (super::random_hex(), super::random_hex());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
