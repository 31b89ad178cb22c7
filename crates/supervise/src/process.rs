//! [`Proc`]: one child process, from spawn to reaping.
//!
//! The child's stdout and stderr are read by a thread each for the child's whole life
//! (a chatty child must never block on a full pipe); the last lines are kept to explain
//! a child that fails, and the readiness line is picked out of stdout. Threads rather
//! than tasks, so the same `Proc` serves the async lab and `bistro up` and the
//! synchronous benchmarks and tests: the methods that wait come in a blocking and an
//! async form, and both poll the same state.

use crate::Error;
use crate::signal::{Signal, die_with_parent, send_group_signal};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output lines kept per process for error messages.
const KEEP_LINES: usize = 40;

/// How often the waiting methods look at the child again.
const POLL: Duration = Duration::from_millis(20);

/// How long a child that closed its output is given to exit before it is reported as
/// exited anyway (its status then unknown).
const CLOSING: Duration = Duration::from_secs(2);

/// How a child says it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A bistro process: `--ready-json` is added to its arguments and its readiness line
    /// ([`bistro_proto::Ready`], on stdout) is awaited and returned.
    Json,
    /// A line on stdout containing this text (redis-server's "Ready to accept
    /// connections").
    Marker(String),
    /// No handshake: ready once started (the caller checks its port, as for nginx).
    Started,
}

/// What happens to a child's output besides keeping its last lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Only kept (and traced at `trace` level).
    Keep,
    /// Also printed by the supervisor, each line prefixed with `[name]`: stderr to
    /// stderr, stdout to stdout (`bistro up` shows its children's logs this way).
    Forward,
}

/// What to start: the program, its arguments and environment, and how it says it is
/// ready.
#[derive(Debug, Clone)]
pub struct Spec {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    isolated: bool,
    readiness: Readiness,
    output: Output,
}

impl Spec {
    /// `program`, known as `name` in messages (`waiter w2`); no handshake, output kept.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Spec {
        Spec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            isolated: false,
            readiness: Readiness::Started,
            output: Output::Keep,
        }
    }

    /// A bistro process (`program` is the bistro binary) with the readiness handshake.
    pub fn bistro(name: impl Into<String>, program: impl Into<PathBuf>) -> Spec {
        Spec::new(name, program).readiness(Readiness::Json)
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Spec {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Spec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (secrets go here: a command line is visible to every
    /// local user).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Spec {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(mut self, envs: I) -> Spec
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.envs
            .extend(envs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Runs the child apart from the user's settings: every `BISTRO_*` variable removed,
    /// `RUST_LOG=info`, `NO_COLOR=1`. The lab and the benchmarks measure with this, so a
    /// config file or log format in the user's shell cannot change what is measured or
    /// how a failure reads. Variables set with [`Spec::env`] still apply.
    pub fn isolated(mut self) -> Spec {
        self.isolated = true;
        self
    }

    /// How the child says it is ready.
    pub fn readiness(mut self, readiness: Readiness) -> Spec {
        self.readiness = readiness;
        self
    }

    /// What happens to the child's output.
    pub fn output(mut self, output: Output) -> Spec {
        self.output = output;
        self
    }

    /// The name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn command(&self) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if self.readiness == Readiness::Json {
            cmd.arg(bistro_proto::ready::FLAG);
        }
        if self.isolated {
            for key in bistro_settings(std::env::vars_os()) {
                cmd.env_remove(key);
            }
            cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: signals reach what the child started too, and a
            // terminal's Ctrl-C reaches only the supervisor, which stops the children.
            .process_group(0);
        die_with_parent(&mut cmd);
        cmd
    }
}

/// The `BISTRO_*` variables among `vars`: the user's settings an isolated child must
/// not inherit.
fn bistro_settings(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<OsString> {
    vars.map(|(key, _)| key)
        .filter(|key| key.to_string_lossy().starts_with("BISTRO_"))
        .collect()
}

/// How a child ended under [`stop_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited by itself within the grace period, with this status.
    Exited(ExitStatus),
    /// It was still running at the deadline and was SIGKILLed.
    Killed,
}

/// A running child process: SIGKILLed with its group and reaped when dropped, so an
/// error or a panic anywhere in the supervisor leaves nothing behind.
#[derive(Debug)]
pub struct Proc {
    name: String,
    program: PathBuf,
    child: Child,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
    /// The readiness line (`Some` for [`Readiness::Json`]) once seen; `None` once taken
    /// or without a handshake.
    ready: Option<mpsc::Receiver<Option<bistro_proto::Ready>>>,
    exited: Option<ExitStatus>,
    paused: bool,
    /// When its stdout was seen closed before the readiness line.
    closing_since: Option<Instant>,
}

impl Proc {
    /// Starts the child without waiting for it to be ready (see [`Proc::wait_ready`]
    /// and [`Proc::ready`]).
    ///
    /// # Errors
    /// [`Error::Spawn`] when it cannot be started.
    pub fn spawn(spec: &Spec) -> Result<Proc, Error> {
        let mut child = spec.command().spawn().map_err(|source| Error::Spawn {
            what: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.id();
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(KEEP_LINES)));
        let forward = spec.output == Output::Forward;
        if let Some(stderr) = child.stderr.take() {
            read_lines(&spec.name, stderr, log.clone(), forward, Stream::Err, None);
        }
        let ready = match (&spec.readiness, child.stdout.take()) {
            (Readiness::Started, Some(stdout)) => {
                read_lines(&spec.name, stdout, log.clone(), forward, Stream::Out, None);
                None
            }
            (readiness, Some(stdout)) => {
                let (tx, rx) = mpsc::channel();
                let watch = Watch {
                    readiness: readiness.clone(),
                    tx,
                };
                read_lines(
                    &spec.name,
                    stdout,
                    log.clone(),
                    forward,
                    Stream::Out,
                    Some(watch),
                );
                Some(rx)
            }
            (_, None) => None,
        };
        Ok(Proc {
            name: spec.name.clone(),
            program: spec.program.clone(),
            child,
            pid,
            log,
            ready,
            exited: None,
            paused: false,
            closing_since: None,
        })
    }

    /// Starts the child and waits, at most `timeout`, until it is ready; returns it and,
    /// for [`Readiness::Json`], its readiness line. A child that fails to get ready is
    /// killed, and the error carries its last output.
    ///
    /// # Errors
    /// [`Error::Spawn`], [`Error::Exited`] or [`Error::NotReady`].
    pub async fn start(
        spec: &Spec,
        timeout: Duration,
    ) -> Result<(Proc, Option<bistro_proto::Ready>), Error> {
        let mut proc = Proc::spawn(spec)?;
        let ready = proc.ready(timeout).await?;
        Ok((proc, ready))
    }

    /// [`Proc::start`] for synchronous callers (it blocks the thread while it waits).
    ///
    /// # Errors
    /// As [`Proc::start`].
    pub fn start_blocking(
        spec: &Spec,
        timeout: Duration,
    ) -> Result<(Proc, Option<bistro_proto::Ready>), Error> {
        let mut proc = Proc::spawn(spec)?;
        let ready = proc.wait_ready(timeout)?;
        Ok((proc, ready))
    }

    /// Waits, at most `timeout`, until the child is ready; kills it if it does not get
    /// ready. Returns the readiness line for [`Readiness::Json`].
    ///
    /// # Errors
    /// [`Error::Exited`] or [`Error::NotReady`].
    pub async fn ready(&mut self, timeout: Duration) -> Result<Option<bistro_proto::Ready>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll_ready(deadline, timeout) {
                Poll::Ready(r) => return r,
                Poll::Pending => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// [`Proc::ready`] for synchronous callers.
    ///
    /// # Errors
    /// As [`Proc::ready`].
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Option<bistro_proto::Ready>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll_ready(deadline, timeout) {
                Poll::Ready(r) => return r,
                Poll::Pending => std::thread::sleep(POLL),
            }
        }
    }

    /// One look at the child while waiting for it to be ready.
    fn poll_ready(&mut self, deadline: Instant, timeout: Duration) -> Poll {
        let outcome = match &self.ready {
            None => self.check_alive().map(|()| None),
            Some(rx) => match rx.try_recv() {
                Ok(ready) => {
                    self.ready = None;
                    Ok(ready)
                }
                Err(TryRecvError::Empty) => match self.check_alive() {
                    Ok(()) if Instant::now() < deadline => return Poll::Pending,
                    Ok(()) => Err(Error::NotReady {
                        what: self.name.clone(),
                        waited: timeout,
                        log: String::new(),
                    }),
                    Err(e) => Err(e),
                },
                // Its stdout closed before the line: it is exiting. Give it a moment to
                // do so, so the error can say how it ended.
                Err(TryRecvError::Disconnected) => {
                    let since = *self.closing_since.get_or_insert_with(Instant::now);
                    if self.try_wait().is_none() && since.elapsed() < CLOSING {
                        return Poll::Pending;
                    }
                    Err(self.exited_error("closed its output before it was ready"))
                }
            },
        };
        Poll::Ready(outcome.map_err(|e| self.failed(e)))
    }

    /// Kills a child that failed to get ready and fills in its last output.
    fn failed(&mut self, mut error: Error) -> Error {
        self.kill();
        // Give the reader threads a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let tail = self.log_tail();
        if let Error::Exited { log, .. } | Error::NotReady { log, .. } = &mut error {
            *log = tail;
        }
        error
    }

    fn exited_error(&mut self, unknown: &str) -> Error {
        Error::Exited {
            what: self.name.clone(),
            status: self
                .try_wait()
                .map_or_else(|| unknown.to_string(), |s| s.to_string()),
            log: self.log_tail(),
        }
    }

    /// The name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The program it runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The process id (also its process group's id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines the child wrote (stdout and stderr), indented, for a message.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.is_empty() {
            return "  (no output)".into();
        }
        log.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its exit status if it has exited (reaping it then), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// Whether it has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        self.try_wait().is_some()
    }

    /// Fails, with its last output, when the child has exited.
    ///
    /// # Errors
    /// [`Error::Exited`].
    pub fn check_alive(&mut self) -> Result<(), Error> {
        match self.try_wait() {
            None => Ok(()),
            Some(_) => Err(self.exited_error("exited")),
        }
    }

    /// Sends `signal` to the child's process group.
    ///
    /// # Errors
    /// [`Error::Signal`], also when the child has already exited (its pid may since
    /// belong to another process, so nothing is sent).
    pub fn signal(&mut self, signal: Signal) -> Result<(), Error> {
        if let Some(status) = self.try_wait() {
            return Err(Error::Signal {
                what: self.name.clone(),
                signal: signal.name(),
                detail: format!("it already exited ({status})"),
            });
        }
        send_group_signal(&self.name, self.pid, signal)
    }

    /// SIGSTOP: the child keeps its memory and sockets but runs no more.
    ///
    /// # Errors
    /// As [`Proc::signal`].
    pub fn pause(&mut self) -> Result<(), Error> {
        self.signal(Signal::Stop)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Proc::pause`].
    ///
    /// # Errors
    /// As [`Proc::signal`].
    pub fn resume(&mut self) -> Result<(), Error> {
        self.signal(Signal::Cont)?;
        self.paused = false;
        Ok(())
    }

    /// Whether it is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGKILL to its group, and reap it (works on a paused child too). A SIGKILLed
    /// process is gone within microseconds, so this blocks only that long.
    pub fn kill(&mut self) {
        self.paused = false;
        if self.try_wait().is_some() {
            return;
        }
        if let Err(e) = send_group_signal(&self.name, self.pid, Signal::Kill) {
            tracing::debug!(process = %self.name, "kill: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.try_wait().is_none() {
            if Instant::now() >= deadline {
                tracing::warn!(process = %self.name, "the process did not exit within 5 s of SIGKILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM, then waits up to `grace` for it to exit; returns its status, or `None`
    /// when it is still running (it is not killed: see [`Proc::stop`]).
    pub fn terminate_blocking(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            self.send_term();
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        stop_all(std::slice::from_mut(self), grace)
            .await
            .pop()
            .unwrap_or(Stopped::Killed)
    }

    /// [`Proc::stop`] for synchronous callers.
    pub fn stop_blocking(&mut self, grace: Duration) -> Stopped {
        stop_all_blocking(std::slice::from_mut(self), grace)
            .pop()
            .unwrap_or(Stopped::Killed)
    }

    fn send_term(&mut self) {
        // A paused child would never act on SIGTERM: wake it up first.
        if self.paused {
            let _ = self.resume();
        }
        if let Err(e) = send_group_signal(&self.name, self.pid, Signal::Term) {
            tracing::debug!(process = %self.name, "SIGTERM: {e}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one look at a child waiting to be ready found.
enum Poll {
    Ready(Result<Option<bistro_proto::Ready>, Error>),
    Pending,
}

/// Stops every child with one shared deadline: SIGTERM to all at once, up to `grace`
/// for all of them together, then SIGKILL to those still running. Returns how each
/// ended, in order.
pub async fn stop_all(procs: &mut [Proc], grace: Duration) -> Vec<Stopped> {
    let deadline = begin_stop(procs, grace);
    while !all_exited(procs) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    finish_stop(procs)
}

/// [`stop_all`] for synchronous callers.
pub fn stop_all_blocking(procs: &mut [Proc], grace: Duration) -> Vec<Stopped> {
    let deadline = begin_stop(procs, grace);
    while !all_exited(procs) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    finish_stop(procs)
}

fn begin_stop(procs: &mut [Proc], grace: Duration) -> Instant {
    for p in procs.iter_mut() {
        if p.try_wait().is_none() {
            p.send_term();
        }
    }
    Instant::now() + grace
}

fn all_exited(procs: &mut [Proc]) -> bool {
    procs.iter_mut().all(|p| p.try_wait().is_some())
}

fn finish_stop(procs: &mut [Proc]) -> Vec<Stopped> {
    procs
        .iter_mut()
        .map(|p| match p.try_wait() {
            Some(status) => Stopped::Exited(status),
            None => {
                tracing::warn!(process = %p.name, "did not stop within the grace period; killing it");
                p.kill();
                Stopped::Killed
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// What the stdout reader looks for.
struct Watch {
    readiness: Readiness,
    tx: mpsc::Sender<Option<bistro_proto::Ready>>,
}

/// Reads `pipe` line by line on a thread of its own until the child closes it: keeps
/// the last lines, forwards them when asked, and reports the readiness line once.
fn read_lines(
    name: &str,
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    forward: bool,
    stream: Stream,
    mut watch: Option<Watch>,
) {
    let label = name.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("output of {name}"))
        .spawn(move || {
            let name = label;
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut is_ready_line = false;
                if let Some(w) = &watch {
                    let ready = match &w.readiness {
                        Readiness::Json => bistro_proto::Ready::parse(&line).map(Some),
                        Readiness::Marker(marker) => line.contains(marker.as_str()).then_some(None),
                        Readiness::Started => None,
                    };
                    if let Some(ready) = ready {
                        is_ready_line = w.readiness == Readiness::Json;
                        // The receiver is gone only if the supervisor stopped waiting.
                        let _ = w.tx.send(ready);
                        watch = None;
                    }
                }
                tracing::trace!(process = %name, "{line}");
                if forward && !is_ready_line {
                    // Not println!: it panics when our own output is closed, and this
                    // thread must keep draining the child's pipe whatever happens.
                    let _unshown = match stream {
                        Stream::Out => writeln!(std::io::stdout().lock(), "[{name}] {line}"),
                        Stream::Err => writeln!(std::io::stderr().lock(), "[{name}] {line}"),
                    };
                }
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                if log.len() == KEEP_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
    if let Err(e) = spawned {
        // Without a reader the child would block on a full pipe; say so loudly.
        tracing::error!(process = %name, error = %e, "could not start the thread that reads its output");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str) -> Spec {
        Spec::new(name, "sh").arg("-c").arg(script)
    }

    #[tokio::test]
    async fn a_process_that_exits_before_it_is_ready_is_reported_with_its_log() {
        let spec = sh("waiter w9", "echo 'cannot open store: boom' >&2; exit 3")
            .readiness(Readiness::Json);
        let Err(e) = Proc::start(&spec, Duration::from_secs(10)).await else {
            panic!("sh exited, start must fail");
        };
        let msg = e.to_string();
        assert!(matches!(e, Error::Exited { .. }), "{msg}");
        assert!(msg.contains("waiter w9") && msg.contains("exited"), "{msg}");
        assert!(msg.contains("cannot open store: boom"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }

    #[tokio::test]
    async fn the_readiness_line_is_returned_and_the_child_can_be_paused_resumed_and_killed() {
        let script = "echo 'starting'; echo '{\"event\":\"ready\",\"role\":\"waiter\",\"pid\":1,\"http\":\"127.0.0.1:4242\",\"admin\":\"127.0.0.1:9\"}'; exec sleep 30";
        let spec = sh("sleeper", script).readiness(Readiness::Json);
        let (mut p, ready) = Proc::start(&spec, Duration::from_secs(10)).await.unwrap();
        let ready = ready.expect("the readiness line");
        assert_eq!(ready.http.port(), 4242);
        assert_eq!(ready.admin.map(|a| a.port()), Some(9));
        assert!(p.log_tail().contains("starting"), "{}", p.log_tail());
        p.pause().unwrap();
        assert!(p.is_paused());
        p.resume().unwrap();
        assert!(!p.has_exited());
        let pid = p.pid();
        p.kill();
        assert!(p.has_exited());
        assert!(
            p.signal(Signal::Cont).is_err(),
            "an exited child is not signalled"
        );
        assert!(
            crate::send_signal("gone", pid, Signal::Cont).is_err(),
            "the pid is gone after kill and reaping"
        );
    }

    #[test]
    fn a_process_that_never_reports_ready_times_out_and_is_killed() {
        let spec = sh("mute", "echo 'thinking'; exec sleep 30").readiness(Readiness::Json);
        let mut p = Proc::spawn(&spec).unwrap();
        let pid = p.pid();
        let e = p.wait_ready(Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, Error::NotReady { .. }), "{e}");
        assert!(e.to_string().contains("thinking"), "{e}");
        assert!(p.has_exited(), "a child that never got ready is killed");
        assert!(crate::send_signal("mute", pid, Signal::Cont).is_err());
    }

    #[test]
    fn a_marker_line_makes_a_third_party_child_ready() {
        let spec = sh(
            "store",
            "echo 'booting'; echo '* Ready to accept connections'; exec sleep 30",
        )
        .readiness(Readiness::Marker("Ready to accept".into()));
        let (mut p, ready) = Proc::start_blocking(&spec, Duration::from_secs(10)).unwrap();
        assert_eq!(ready, None);
        assert!(!p.has_exited());
    }

    #[test]
    fn stopping_signals_the_whole_group_with_one_deadline() {
        // Each shell leaves a grandchild `sleep` in its group; stopping the shell must
        // stop the grandchild too (the group is signalled, not just the leader).
        let mut procs: Vec<Proc> = (0..3)
            .map(|i| {
                let spec = sh(
                    &format!("shell {i}"),
                    "sleep 30 & echo \"grandchild $!\"; wait",
                );
                Proc::spawn(&spec).unwrap()
            })
            .collect();
        let grandchildren: Vec<u32> = procs
            .iter()
            .map(|p| {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let tail = p.log_tail();
                    if let Some(pid) = tail
                        .split_whitespace()
                        .skip_while(|w| *w != "grandchild")
                        .nth(1)
                    {
                        break pid.parse().unwrap();
                    }
                    assert!(Instant::now() < deadline, "no grandchild pid: {tail}");
                    std::thread::sleep(POLL);
                }
            })
            .collect();
        let started = Instant::now();
        let outcomes = stop_all_blocking(&mut procs, Duration::from_secs(20));
        // sh runs no handler for SIGTERM while it waits: it dies of the signal.
        assert_eq!(outcomes.len(), 3);
        assert!(
            outcomes.iter().all(|o| matches!(o, Stopped::Exited(_))),
            "{outcomes:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "all stopped before the shared deadline"
        );
        for pid in grandchildren {
            let path = format!("/proc/{pid}/stat");
            let deadline = Instant::now() + Duration::from_secs(10);
            // The grandchild may linger as a zombie until init reaps it; running it is not.
            while std::fs::read_to_string(&path)
                .is_ok_and(|s| !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
            {
                assert!(
                    Instant::now() < deadline,
                    "grandchild {pid} survived its group's SIGTERM"
                );
                std::thread::sleep(POLL);
            }
        }
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_at_the_deadline() {
        let spec = sh(
            "stubborn",
            "trap '' TERM; echo up; while :; do sleep 1; done",
        );
        let mut p = Proc::spawn(&spec).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.log_tail().contains("up") {
            assert!(Instant::now() < deadline);
            std::thread::sleep(POLL);
        }
        assert_eq!(p.stop_blocking(Duration::from_millis(200)), Stopped::Killed);
        assert!(p.has_exited());
    }

    #[test]
    fn only_bistro_settings_are_removed_from_an_isolated_child() {
        let vars = [
            ("BISTRO_CONFIG", "x"),
            ("PATH", "/bin"),
            ("RUST_LOG", "debug"),
            ("BISTRO_LOG_FORMAT", "json"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        assert_eq!(
            bistro_settings(vars.into_iter()),
            vec![
                OsString::from("BISTRO_CONFIG"),
                OsString::from("BISTRO_LOG_FORMAT")
            ]
        );
    }

    #[test]
    fn isolated_children_log_at_info_and_keep_explicit_variables() {
        let outer = sh("outer", "env | grep -E '^(RUST_LOG|NO_COLOR|BISTRO_)'")
            .env("BISTRO_KEPT", "yes")
            .isolated();
        let (mut p, _) = Proc::start_blocking(&outer, Duration::from_secs(10)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.has_exited() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(POLL);
        }
        std::thread::sleep(Duration::from_millis(50));
        let env = p.log_tail();
        assert!(env.contains("RUST_LOG=info"), "{env}");
        assert!(
            env.contains("BISTRO_KEPT=yes"),
            "explicit variables still apply: {env}"
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = Proc::spawn(&Spec::new("ghost", "/nonexistent/bistro")).unwrap_err();
        assert!(matches!(e, Error::Spawn { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/bistro"), "{e}");
    }
}
