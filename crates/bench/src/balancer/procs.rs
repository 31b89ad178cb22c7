//! The processes the benchmark starts, their temporary files, and the CPU they burn.
//!
//! Every process is a [`bistro_supervise::Proc`]: stopped by the run (SIGTERM, then
//! SIGKILL after a grace period), and SIGKILLed with its process group when dropped, so
//! an error anywhere in the run still leaves nothing behind; each child also asks the
//! kernel for SIGTERM should the benchmark itself die (`kill -9`, where no destructor
//! runs). A bistro child says where it listens in its readiness line; nginx and HAProxy
//! are ready when their port accepts connections ([`spawn_listening`]).
//!
//! CPU time comes from `/proc/PID/stat` (user + system ticks), summed over a process
//! and its children for nginx, whose work happens in worker processes.

use anyhow::{Context, bail};
pub(super) use bistro_supervise::{Proc, Spec};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The run's temporary directory (`tempfile`'s): configurations, pid files and logs of
/// the children; removed on drop.
#[derive(Debug)]
pub(super) struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates `bistro-bench-XXXXXX` in the system temp dir.
    pub(super) fn new() -> anyhow::Result<TempDir> {
        tempfile::Builder::new()
            .prefix("bistro-bench-")
            .tempdir()
            .map(TempDir)
            .context("creating the benchmark's temporary directory")
    }

    pub(super) fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The lines every benchmark report starts with: its name, the command that repeats
/// it, and the machine (cores, load average now).
pub(super) fn print_header(name: &str, command: &str) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{name}");
    println!("command:  {command}");
    println!(
        "machine:  {cores} cores, load average {} at the start",
        load_average()
    );
}

/// nginx and HAProxy from `PATH`, unless the user left them out.
pub(super) fn find_peers(no_peers: bool) -> (Option<PathBuf>, Option<PathBuf>) {
    if no_peers {
        (None, None)
    } else {
        (find_in_path("nginx"), find_in_path("haproxy"))
    }
}

/// A `bistro` child (this very binary) with `args`, isolated from the user's `BISTRO_*`
/// settings so they cannot leak into the measurement, with the readiness handshake.
/// Returns once its readiness line says where it listens.
pub(super) fn spawn_bistro(
    name: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> anyhow::Result<(Proc, SocketAddr)> {
    let exe = std::env::current_exe().context("locating the bistro binary")?;
    let spec = Spec::bistro(name, exe)
        .args(args)
        .envs(env.iter().copied())
        .isolated();
    let (proc, ready) = Proc::start_blocking(&spec, Duration::from_secs(20))?;
    let ready = ready.context("a bistro child's readiness line")?;
    Ok((proc, ready.http))
}

/// Starts a third-party program (nginx, HAProxy) as `name` and waits, at most
/// `timeout`, until `addr` accepts TCP connections.
pub(super) fn spawn_listening(
    spec: &Spec,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<Proc> {
    let mut proc = Proc::spawn(spec)?;
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(proc);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not accept connections on {addr} within {timeout:?}; its last output:\n{}",
                proc.name(),
                proc.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port, for a program that cannot be told to pick its own. Another
/// process may take it before that program binds it; the caller then fails to start
/// and says so.
pub(super) fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// The executable `name` on `PATH`, if any.
pub(super) fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The first output line of `program ARGS` (stdout or stderr) that mentions `needle`:
/// how the peers report their versions.
pub(super) fn version_line(program: &Path, args: &[&str], needle: &str) -> String {
    let output = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => return format!("version unknown ({e})"),
    };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find(|l| l.to_lowercase().contains(needle))
        .map_or_else(|| "version unknown".into(), |l| l.trim().to_string())
}

/// CPU time of some processes: in user space, and in the kernel on their behalf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CpuTime {
    pub(super) user: Duration,
    pub(super) system: Duration,
}

impl CpuTime {
    pub(super) fn total(self) -> Duration {
        self.user + self.system
    }

    /// The time spent since `earlier`.
    pub(super) fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// User and system CPU time of the processes `pids` (all their threads).
pub(super) fn cpu_time(pids: &[u32]) -> anyhow::Result<CpuTime> {
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    let (mut user, mut system) = (0, 0);
    for &pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat (Linux only)"))?;
        let fields = stat_fields(&stat).context("unexpected /proc/PID/stat format")?;
        // utime and stime are fields 14 and 15; `fields` starts at field 3.
        user += fields.get(11).context("utime")?.parse::<u64>()?;
        system += fields.get(12).context("stime")?.parse::<u64>()?;
    }
    let time = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / hz);
    Ok(CpuTime {
        user: time(user),
        system: time(system),
    })
}

/// The fields of a `/proc/PID/stat` line after the command name (which may contain
/// spaces and parentheses, hence the search for the last `)`).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let end = stat.rfind(')')?;
    Some(stat[end + 1..].split_whitespace().collect())
}

/// `pid` and its direct children (nginx's master and workers).
pub(super) fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat_fields(&stat).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// `/proc/loadavg`'s first three figures, to say how busy the machine was.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Sixteen random bytes as hex, for the balancers' affinity key.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 1 0";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "1");
        assert_eq!((f[11], f[12]), ("7", "3"));
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        assert!(cpu_time(&[std::process::id()]).is_ok());
    }
}
