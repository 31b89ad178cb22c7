//! `--ready-json`: the one line a supervisor reads to know a process accepts connections
//! (see [`bistro_proto::ready`]), printed on stdout while the logs go to stderr.

use bistro_proto::Ready;
use std::io::Write;

/// Prints `ready` as its line on stdout and flushes it: a supervisor waits for it.
pub fn announce(ready: &Ready) {
    let mut out = std::io::stdout().lock();
    // A supervisor that closed our stdout is not waiting for the line: nothing to do.
    if let Err(e) = writeln!(out, "{}", ready.to_line()).and_then(|()| out.flush()) {
        tracing::debug!(error = %e, "could not print the readiness line");
    }
}
