//! Signals, through kill(2) and prctl(2) as rustix wraps them: the whole program sends
//! signals this one way.

use crate::Error;
use rustix::process::{Pid, kill_process, kill_process_group};
use std::fmt;

/// The signals bistro sends to processes it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop cleanly (drain, flush, exit 0).
    Term,
    /// Die at once; cannot be caught.
    Kill,
    /// Freeze: the process keeps its memory and sockets but runs no more.
    Stop,
    /// Thaw after [`Signal::Stop`].
    Cont,
    /// As Ctrl-C.
    Int,
    /// Reload (the balancer's certificates).
    Hup,
}

impl Signal {
    /// The name without `SIG`, as in `kill -l`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
            Signal::Int => "INT",
            Signal::Hup => "HUP",
        }
    }

    fn raw(self) -> rustix::process::Signal {
        use rustix::process::Signal as S;
        match self {
            Signal::Term => S::TERM,
            Signal::Kill => S::KILL,
            Signal::Stop => S::STOP,
            Signal::Cont => S::CONT,
            Signal::Int => S::INT,
            Signal::Hup => S::HUP,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

fn pid_of(name: &str, pid: u32, signal: Signal) -> Result<Pid, Error> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::Signal {
            what: name.to_string(),
            signal: signal.name(),
            detail: "the process has no pid (it already exited)".into(),
        })
}

/// Sends `signal` to process `pid` (named `name` in the error).
///
/// # Errors
/// [`Error::Signal`] when the process has no pid or kill(2) fails (the process is
/// gone, or not ours).
pub fn send_signal(name: &str, pid: u32, signal: Signal) -> Result<(), Error> {
    let target = pid_of(name, pid, signal)?;
    kill_process(target, signal.raw()).map_err(|e| Error::Signal {
        what: name.to_string(),
        signal: signal.name(),
        detail: e.to_string(),
    })
}

/// Sends `signal` to every process of the group `pgid` leads.
pub(crate) fn send_group_signal(name: &str, pgid: u32, signal: Signal) -> Result<(), Error> {
    let target = pid_of(name, pgid, signal)?;
    kill_process_group(target, signal.raw()).map_err(|e| Error::Signal {
        what: name.to_string(),
        signal: signal.name(),
        detail: e.to_string(),
    })
}

/// Asks the kernel to send the child SIGTERM when this process ends, however it ends: a
/// destructor covers a supervisor that returns or panics, this covers one that is
/// SIGKILLed (regression: a killed lab's waiters, balancer and store survived it).
/// [`crate::Spec`] does this for every child; it is public for commands built
/// elsewhere.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the child between fork and exec; it makes two system
    // calls (prctl, getppid) through rustix, both async-signal-safe, and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // The parent died before the request took effect: do not outlive it.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}
