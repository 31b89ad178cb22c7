//! Throwaway PostgreSQL and Redis servers for bistro's tests, so that `cargo test
//! --workspace` runs on any machine with the two installed, running or not.
//!
//! [`postgres_url`] and [`redis_url`] return `BISTRO_TEST_POSTGRES_URL` /
//! `BISTRO_TEST_REDIS_URL` when set (CI passes the machine's servers that way, and a
//! test must then fail, never skip, when they are unreachable). When unset, the first
//! call in a test process starts a server of its own from the installed binaries, on a
//! free loopback port, in a fresh directory, without durability (`fsync=off`, no
//! snapshots: nothing in it outlives the run), and every later call in that process
//! shares it. Each test binary is one process, so a `cargo test` run starts at most one
//! of each per test binary that needs it.
//!
//! The servers stop with the test process: they are started through `setpriv
//! --pdeathsig` from a thread that lives as long as the process, so the kernel
//! signals them when the process ends, however it ends. Their directories are removed
//! by the next run that finds them orphaned.
//!
//! PostgreSQL refuses to run as root; a root test run starts it as the `postgres` user
//! (which the Debian package creates). When a binary is missing the panic names the
//! package to install.

#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The PostgreSQL server tests use: `BISTRO_TEST_POSTGRES_URL`, or a throwaway one.
///
/// # Panics
/// When no URL is set and no server can be started (the message says why and what to
/// install).
pub fn postgres_url() -> String {
    from_env("BISTRO_TEST_POSTGRES_URL").unwrap_or_else(|| {
        static URL: OnceLock<String> = OnceLock::new();
        URL.get_or_init(|| {
            start_postgres().unwrap_or_else(|e| {
                panic!(
                    "BISTRO_TEST_POSTGRES_URL is not set and a throwaway PostgreSQL could not be started: {e}"
                )
            })
        })
        .clone()
    })
}

/// The Redis server tests use: `BISTRO_TEST_REDIS_URL`, or a throwaway one.
///
/// # Panics
/// When no URL is set and no server can be started (the message says why and what to
/// install).
pub fn redis_url() -> String {
    from_env("BISTRO_TEST_REDIS_URL").unwrap_or_else(|| {
        static URL: OnceLock<String> = OnceLock::new();
        URL.get_or_init(|| {
            start_redis().unwrap_or_else(|e| {
                panic!(
                    "BISTRO_TEST_REDIS_URL is not set and a throwaway Redis could not be started: {e}"
                )
            })
        })
        .clone()
    })
}

fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// How long a throwaway server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn start_postgres() -> Result<String, String> {
    let bin = postgres_bin_dir().ok_or(
        "PostgreSQL's initdb and postgres are not installed (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql), or set BISTRO_TEST_POSTGRES_URL",
    )?;
    let user = if is_root() {
        Some(RunAs::lookup("postgres").ok_or(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as; run the tests as a normal user, or set BISTRO_TEST_POSTGRES_URL",
        )?)
    } else {
        None
    };
    let dir = fresh_dir("pg")?;
    if let Some(user) = &user {
        user.chown(&dir)?;
    }
    let data = dir.join("data");
    let mut initdb = command(&bin.join("initdb"), user.as_ref(), None);
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = initdb
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let port = free_port()?;
    // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients.
    let mut postgres = command(&bin.join("postgres"), user.as_ref(), Some("INT"));
    postgres
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(&dir)
        // A throwaway server: speed over durability, and room for many parallel tests.
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_owned(postgres).map_err(|e| format!("cannot start postgres: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let isready = bin.join("pg_isready");
    loop {
        let ready = Command::new(&isready)
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the throwaway PostgreSQL on port {port} did not accept connections within {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

fn start_redis() -> Result<String, String> {
    let bin = find_on_path("redis-server").ok_or(
        "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or set BISTRO_TEST_REDIS_URL",
    )?;
    let dir = fresh_dir("redis")?;
    let port = free_port()?;
    let mut redis = command(&bin, None, Some("TERM"));
    redis
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_owned(redis).map_err(|e| format!("cannot start redis-server: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    while !redis_answers(port) {
        if Instant::now() > deadline {
            return Err(format!(
                "the throwaway Redis on port {port} did not answer PING within {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(format!("redis://127.0.0.1:{port}/"))
}

fn redis_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A command for a server binary: through `setpriv` when it is installed, which makes
/// the kernel send the server `pdeath` (a signal name) when this process ends, and
/// switches to `user` when given.
fn command(program: &Path, user: Option<&RunAs>, pdeath: Option<&str>) -> Command {
    match find_on_path("setpriv") {
        Some(setpriv) if pdeath.is_some() || user.is_some() => {
            let mut cmd = Command::new(setpriv);
            if let Some(signal) = pdeath {
                cmd.args(["--pdeathsig", signal]);
            }
            if let Some(user) = user {
                cmd.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--init-groups");
            }
            cmd.arg("--").arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// Starts `cmd` from a thread that lives as long as the process: the parent-death
/// signal fires when the *thread* that started a child ends, and test threads end
/// after each test.
fn spawn_owned(cmd: Command) -> std::io::Result<u32> {
    type Job = (Command, mpsc::Sender<std::io::Result<u32>>);
    static OWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let owner = OWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("bistro-test-servers".into())
            .spawn(move || {
                let mut children: Vec<Child> = Vec::new();
                for (mut cmd, reply) in rx {
                    let started = cmd.spawn().map(|child| {
                        let pid = child.id();
                        children.push(child);
                        pid
                    });
                    let _caller_gone = reply.send(started);
                }
                // Every sender is gone only when the process exits; keep the children.
                std::mem::forget(children);
            })
            .expect("a thread for the test servers");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    owner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the test-server thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the test-server thread is gone"))?
}

/// The directory holding `initdb`, `postgres` and `pg_isready`: on `PATH`, or the
/// newest under `/usr/lib/postgresql/*/bin` (Debian keeps them off `PATH`).
fn postgres_bin_dir() -> Option<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(initdb) = find_on_path("initdb")
        && let Some(dir) = initdb.parent()
        && has_all(dir)
    {
        return Some(dir.to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_all(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/sbin".into(),
            "/bin".into(),
        ])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A loopback port that was free a moment ago (the servers cannot report the port they
/// bound).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// A new directory `bistro-test-<tag>-<pid>-<n>` in the temp dir, after removing those
/// left by test processes that are gone.
fn fresh_dir(tag: &str) -> Result<PathBuf, String> {
    let tmp = std::env::temp_dir();
    let prefix = format!("bistro-test-{tag}-");
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _best_effort = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = tmp.join(format!("{prefix}{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The user a root test run starts PostgreSQL as.
struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    fn lookup(name: &str) -> Option<RunAs> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.first() != Some(&name) || fields.len() < 4 {
                return None;
            }
            Some(RunAs {
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
            })
        })
    }

    fn chown(&self, dir: &Path) -> Result<(), String> {
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))
            .map_err(|e| format!("cannot hand {} to the postgres user: {e}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_url_is_used_as_is() {
        // The variables are read, never written, by the code under test; a name of its
        // own keeps this test from racing others.
        assert_eq!(from_env("BISTRO_TESTSUPPORT_SURELY_UNSET"), None);
        assert_eq!(from_env("PATH"), std::env::var("PATH").ok());
    }

    #[test]
    fn fresh_dirs_are_distinct() {
        let a = fresh_dir("unit").unwrap();
        let b = fresh_dir("unit").unwrap();
        assert_ne!(a, b);
        std::fs::remove_dir_all(a).unwrap();
        std::fs::remove_dir_all(b).unwrap();
    }
}
