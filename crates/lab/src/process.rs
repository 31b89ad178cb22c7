//! Child processes the lab starts: spawn, wait until ready, signal, stop.
//!
//! Every process is a `tokio::process::Child` with `kill_on_drop`, so even a panic or a
//! dropped future cannot leave one running, and asks the kernel for SIGTERM when the lab
//! dies ([`die_with_parent`]), so neither can a lab that is SIGKILLed; the normal path
//! still kills and *waits* for each one explicitly, so none is left as a zombie either.
//! Signals go through [`send_signal`] (kill(2) via rustix), which `bistro up` and the
//! benchmarks use too.
//!
//! Readiness is an explicit handshake, not a log line: `bistro waiter` and `bistro
//! balancer` are started with `--ready-json` and print one JSON line on stdout once they
//! accept connections ([`bistro_proto::Ready`]; they are started on port 0, so that line
//! is also how the lab learns the port). Their logs (stderr) and stdout are drained for
//! the process's whole life, or a chatty child would block on a full pipe; the last
//! lines are kept to explain a process that fails to start.

use crate::error::LabError;
use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Log lines kept per process for error messages.
const KEEP_LINES: usize = 20;

/// What tells the lab that a process is ready.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
    /// The readiness line of a bistro process started with `--ready-json` (added to its
    /// arguments here): its HTTP address is returned.
    ReadyJson,
    /// A line containing this text on stdout (e.g. redis' "Ready to accept connections").
    StdoutLine(&'static str),
}

/// How waiting for a process to be ready ended.
enum Start {
    /// It said it is ready (with its readiness line, for a bistro process).
    Ready(Option<bistro_proto::Ready>),
    /// Its log closed before the ready line.
    LogClosed,
    /// It exited.
    Exited(std::io::Result<std::process::ExitStatus>),
    /// It said nothing in time.
    TimedOut,
}

/// A running child process.
pub struct Proc {
    /// Which process, for messages (`waiter w2`).
    pub name: String,
    child: Child,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
    paused: bool,
}

impl Proc {
    /// Starts `cmd` and waits until it is ready; returns the process and, for
    /// [`Ready::ReadyJson`], what its readiness line said (its addresses).
    ///
    /// # Errors
    /// [`LabError::Spawn`], [`LabError::Exited`] or [`LabError::NotReady`].
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[String],
        ready: Ready,
        timeout: Duration,
    ) -> Result<(Proc, Option<bistro_proto::Ready>), LabError> {
        Proc::start_with_env(name, program, args, &[], ready, timeout).await
    }

    /// [`Proc::start`] with extra environment variables (secrets, which a command line
    /// would show every local user).
    ///
    /// # Errors
    /// As [`Proc::start`].
    pub async fn start_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        ready: Ready,
        timeout: Duration,
    ) -> Result<(Proc, Option<bistro_proto::Ready>), LabError> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        if matches!(ready, Ready::ReadyJson) {
            cmd.arg(bistro_proto::ready::FLAG);
        }
        cmd.envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Info level, plain text, no config file: the logs kept for an error
            // message read the same whatever the user's environment says.
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("BISTRO_CONFIG")
            .env_remove("BISTRO_LOG_FORMAT");
        die_with_parent(cmd.as_std_mut());
        let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
            what: name.to_string(),
            program: program.to_path_buf(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(KEEP_LINES)));
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let stderr = child.stderr.take().expect("stderr is piped");
        drain(name, stderr, log.clone(), |_| {});
        let stdout = child.stdout.take().expect("stdout is piped");
        match ready {
            Ready::ReadyJson => {
                drain(name, stdout, log.clone(), move |line| {
                    if let Some(ready) = bistro_proto::Ready::parse(line)
                        && let Some(tx) = tx.take()
                    {
                        // The receiver is gone only if start() already gave up.
                        let _receiver_gone = tx.send(Some(ready));
                    }
                });
            }
            Ready::StdoutLine(marker) => {
                drain(name, stdout, log.clone(), move |line| {
                    if line.contains(marker)
                        && let Some(tx) = tx.take()
                    {
                        let _receiver_gone = tx.send(None);
                    }
                });
            }
        }
        let mut proc = Proc {
            name: name.to_string(),
            child,
            pid,
            log,
            paused: false,
        };
        let exited = |status: std::io::Result<std::process::ExitStatus>| LabError::Exited {
            what: name.to_string(),
            status: status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
            log: String::new(),
        };
        let outcome = tokio::select! {
            ready = rx => match ready {
                Ok(addr) => Start::Ready(addr),
                Err(_) => Start::LogClosed,
            },
            status = proc.child.wait() => Start::Exited(status),
            () = tokio::time::sleep(timeout) => Start::TimedOut,
        };
        let outcome = match outcome {
            Start::Ready(addr) => Ok(addr),
            Start::Exited(status) => Err(exited(status)),
            Start::TimedOut => Err(LabError::NotReady {
                what: name.to_string(),
                waited: timeout,
                log: String::new(),
            }),
            // The log closed without the ready line: the process is exiting.
            Start::LogClosed => {
                let wait = tokio::time::timeout(Duration::from_secs(2), proc.child.wait()).await;
                let closed = || std::io::Error::other("closed its log before it was ready");
                Err(exited(wait.unwrap_or_else(|_| Err(closed()))))
            }
        };
        match outcome {
            Ok(addr) => Ok((proc, addr)),
            Err(mut e) => {
                proc.kill().await;
                // Give the drain tasks a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let tail = proc.log_tail();
                if let LabError::Exited { log, .. } | LabError::NotReady { log, .. } = &mut e {
                    *log = tail;
                }
                Err(e)
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines the process wrote.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL and wait for the process to be gone (works on a paused process too).
    pub async fn kill(&mut self) {
        if let Err(e) = self.child.start_kill() {
            // Already exited: nothing to kill, wait() below reaps it.
            tracing::debug!(process = %self.name, "kill: {e}");
        }
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(process = %self.name, "waiting for the killed process failed: {e}")
            }
            Err(_) => {
                tracing::warn!(process = %self.name, "the process did not exit within 5 s of SIGKILL")
            }
        }
        self.paused = false;
    }

    /// SIGSTOP: the process keeps its memory and sockets but runs no more.
    ///
    /// # Errors
    /// [`LabError::Signal`] when the signal could not be sent.
    pub async fn pause(&mut self) -> Result<(), LabError> {
        send_signal(&self.name, self.pid, "STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Proc::pause`].
    ///
    /// # Errors
    /// [`LabError::Signal`] when the signal could not be sent.
    pub async fn resume(&mut self) -> Result<(), LabError> {
        send_signal(&self.name, self.pid, "CONT")?;
        self.paused = false;
        Ok(())
    }

    /// Whether the process is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

/// Asks the kernel to send the child SIGTERM when this process ends, however it ends:
/// `kill_on_drop` covers a lab that returns or panics, this covers one that is
/// SIGKILLed (regression: its waiters, balancer and store survived it). Also used by
/// `bistro up` and the benchmarks.
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

/// Sends `SIG<signal>` (`"STOP"`, `"CONT"`, `"TERM"` or `"KILL"`) to process `pid`,
/// named `name` in the error, through kill(2) (rustix's safe wrapper). `bistro up`'s
/// process control and the benchmarks use it too: one way to signal a process in the
/// whole program.
///
/// # Errors
/// [`LabError::Signal`] for an unknown signal name, a process without a pid, or when
/// kill(2) fails (the process is gone, or not ours).
pub fn send_signal(name: &str, pid: u32, signal: &'static str) -> Result<(), LabError> {
    use rustix::process::{Pid, Signal, kill_process};
    let fail = |detail: String| LabError::Signal {
        what: name.to_string(),
        signal,
        detail,
    };
    let sig = match signal {
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        other => return Err(fail(format!("SIG{other} is not a signal bistro sends"))),
    };
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| fail("the process has no pid (it already exited)".into()))?;
    kill_process(pid, sig).map_err(|e| fail(e.to_string()))
}

/// Reads `pipe` line by line until it closes, keeping the last lines and showing each to
/// `on_line`.
fn drain(
    name: &str,
    pipe: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    mut on_line: impl FnMut(&str) + Send + 'static,
) {
    let name = name.to_string();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    tracing::trace!(process = %name, "{line}");
                    on_line(&line);
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    if log.len() == KEEP_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(process = %name, "log pipe closed: {e}");
                    break;
                }
            }
        }
    });
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_exits_before_it_is_ready_is_reported_with_its_log() {
        let args = vec![
            "-c".to_string(),
            "echo 'cannot open store: boom' >&2; exit 3".to_string(),
        ];
        let Err(e) = Proc::start(
            "waiter w9",
            Path::new("sh"),
            &args,
            Ready::ReadyJson,
            Duration::from_secs(5),
        )
        .await
        else {
            panic!("sh exited, start must fail");
        };
        let msg = e.to_string();
        assert!(msg.contains("waiter w9") && msg.contains("exited"), "{msg}");
        assert!(msg.contains("cannot open store: boom"), "{msg}");
    }

    #[tokio::test]
    async fn a_ready_process_can_be_paused_resumed_and_killed() {
        let port = free_port().unwrap();
        let script = format!(
            "echo '{{\"event\":\"ready\",\"role\":\"waiter\",\"pid\":1,\"http\":\"127.0.0.1:{port}\",\"admin\":\"127.0.0.1:9\"}}'; exec sleep 30"
        );
        let args = vec!["-c".to_string(), script];
        let (mut p, addr) = Proc::start(
            "sleeper",
            Path::new("sh"),
            &args,
            Ready::ReadyJson,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let ready = addr.expect("the readiness line");
        assert_eq!(ready.http.port(), port);
        assert_eq!(ready.admin.map(|a| a.port()), Some(9));
        p.pause().await.unwrap();
        assert!(p.is_paused());
        p.resume().await.unwrap();
        assert!(!p.has_exited());
        p.kill().await;
        assert!(p.has_exited());
        assert!(
            send_signal("gone", p.pid(), "CONT").is_err(),
            "the pid is gone after kill and wait"
        );
    }

    #[tokio::test]
    async fn a_process_that_never_reports_ready_times_out() {
        let args = vec!["-c".to_string(), "exec sleep 30".to_string()];
        let started = std::time::Instant::now();
        let r = Proc::start(
            "mute",
            Path::new("sh"),
            &args,
            Ready::ReadyJson,
            Duration::from_millis(300),
        )
        .await;
        assert!(matches!(r, Err(LabError::NotReady { .. })));
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
