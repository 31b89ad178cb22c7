//! Real `bistro` processes for integration tests: spawned from the binary cargo built,
//! on `127.0.0.1:0`, their addresses read from their readiness line (`--ready-json`),
//! killed on drop so no child outlives a test.

#![allow(dead_code)] // each test file uses a different part of this module

use bistro_supervise::{Output, Readiness, Signal, Spec};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// A running `bistro` child process (through the same supervisor as the lab, `bistro
/// up` and the benchmarks): killed with its process group when dropped.
pub struct Proc {
    pub proc: bistro_supervise::Proc,
    pub addr: SocketAddr,
    pub name: String,
    /// The admin address, when it has an admin API.
    pub admin: Option<SocketAddr>,
    /// The line-protocol address, when it listens for TCP.
    pub tcp: Option<SocketAddr>,
}

impl Proc {
    /// SIGKILL: the process dies at once, with whatever it held in memory.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.proc.terminate_blocking(timeout)
    }

    /// Sends `signal` to the process.
    pub fn signal(&mut self, signal: Signal) {
        if let Err(e) = self.proc.signal(signal) {
            panic!("{e}");
        }
    }
}

/// Starts `bistro <args> --ready-json` and waits for its readiness line.
pub fn spawn_bistro(name: &str, args: &[&str]) -> Proc {
    let spec = Spec::bistro(name, env!("CARGO_BIN_EXE_bistro")).args(args);
    spawn_spec(spec)
}

/// Like [`spawn_bistro`], with the child's file-descriptor limit (soft and hard) set to
/// `nofile` before it starts (by the shell's `ulimit`, then `exec`).
pub fn spawn_bistro_with_fd_limit(name: &str, nofile: u32, args: &[&str]) -> Proc {
    let spec = Spec::new(name, "sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_bistro"))
        .args(args)
        .readiness(Readiness::Json);
    spawn_spec(spec)
}

fn spawn_spec(spec: Spec) -> Proc {
    let verbose = std::env::var_os("BISTRO_TEST_VERBOSE").is_some();
    let spec = spec.isolated().output(if verbose {
        Output::Forward
    } else {
        Output::Keep
    });
    let name = spec.name().to_string();
    let (proc, ready) = bistro_supervise::Proc::start_blocking(&spec, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let ready = ready.unwrap_or_else(|| panic!("{name} printed no readiness line"));
    Proc {
        proc,
        addr: ready.http,
        name,
        admin: ready.admin,
        tcp: ready.tcp,
    }
}

/// Starts a balancer on a free loopback port in front of `waiters` (each given as
/// `--backend ID=ADDR` followed by `backend_suffix`, e.g. `,mode=stateful`), with its
/// admin API on another free loopback port and `extra` options.
pub fn spawn_balancer(waiters: &[&Proc], backend_suffix: &str, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = [
        "balancer",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    for w in waiters {
        args.extend([
            "--backend".into(),
            format!("{}={}{backend_suffix}", w.name, w.addr),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let balancer = spawn_bistro("balancer", &args);
    assert!(
        balancer.admin.is_some(),
        "the balancer names its admin address"
    );
    balancer
}

/// Starts a waiter with `extra` options on a free loopback port.
pub fn spawn_waiter(id: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["waiter", "--id", id, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    spawn_bistro(id, &args)
}

/// A port that was free a moment ago (for servers that cannot bind port 0 and report
/// it, such as redis-server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The PostgreSQL and Redis URLs for tests: CI sets them; without them, throwaway
/// servers are started from the installed binaries (see `bistro-testsupport`).
#[allow(unused_imports)] // not every test binary needs a store server
pub use bistro_testsupport::{postgres_url, redis_url};

/// A unique temporary SQLite path, removed (with its WAL files) on drop.
pub struct TempDb(pub String);

impl TempDb {
    pub fn new(tag: &str) -> TempDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "bistro-test-{tag}-{}-{nanos}.db",
            std::process::id()
        ));
        TempDb(path.to_string_lossy().into_owned())
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.0)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _missing_is_fine = std::fs::remove_file(format!("{}{suffix}", self.0));
        }
    }
}
