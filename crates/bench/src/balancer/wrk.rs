//! wrk as the load generator (`--load wrk`): the tool the anchors were measured with.
//!
//! wrk runs as `wrk -tT -cC -dSs --latency URL` and its report is parsed: the request
//! count, the rate, the 50th and 99th latency percentiles (from its own HDR histogram),
//! and its error lines. wrk cannot hold one cookie per connection, so in a sticky setup a
//! small Lua script sends, request after request, one cookie per backend in turn (each
//! obtained from a first answer, as a returning diner's would be). Every request still
//! carries a valid cookie and the load stays spread over the backends, but a
//! connection's cookie changes between requests, which bistro's per-connection verdict
//! cache cannot help with: under wrk, bistro's sticky rows pay a signature check on every
//! request, and wrk itself runs Lua per request.

use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What wrk reported.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Report {
    pub(super) requests: u64,
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    /// Non-2xx/3xx answers plus socket errors.
    pub(super) errors: u64,
    /// Non-2xx/3xx answers.
    pub(super) non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub(super) socket_errors: u64,
}

/// Runs wrk against `http://addr/path` for `duration`; `script` is a Lua file or none.
pub(super) fn run(
    wrk: &Path,
    addr: SocketAddr,
    path: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
    script: Option<&Path>,
) -> anyhow::Result<Report> {
    let mut command = Command::new(wrk);
    command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    command
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("starting wrk")?;
    // wrk stops by itself after `duration`; this bound only guards against a hang.
    let deadline = Instant::now() + duration + Duration::from_secs(30);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            if let Err(e) = child.kill() {
                eprintln!("warning: could not kill wrk: {e}");
            }
            let _reaped = child.wait();
            bail!(
                "wrk did not finish within {:?}",
                duration + Duration::from_secs(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("reading wrk's report:\n{stdout}"))
}

/// Parses wrk's `--latency` report.
pub(super) fn parse(report: &str) -> anyhow::Result<Report> {
    let mut requests = None;
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let (mut non_2xx, mut socket_errors) = (0, 0);
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => requests = Some(n.parse()?),
            ["Requests/sec:", r] => rps = Some(r.parse()?),
            ["50%", v] => p50 = Some(millis(v)?),
            ["99%", v] => p99 = Some(millis(v)?),
            ["Non-2xx", "or", "3xx", "responses:", n] => non_2xx += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect A, read B, write C, timeout D
                for n in rest.iter().skip(1).step_by(2) {
                    socket_errors += n.trim_end_matches(',').parse::<u64>()?;
                }
            }
            _ => {}
        }
    }
    Ok(Report {
        requests: requests.context("no \"N requests in\" line")?,
        rps: rps.context("no Requests/sec line")?,
        p50_ms: p50.context("no 50% line (was --latency given?)")?,
        p99_ms: p99.context("no 99% line")?,
        errors: non_2xx + socket_errors,
        non_2xx,
        socket_errors,
    })
}

/// A wrk duration such as `812.00us`, `4.65ms` or `1.02s`, in milliseconds.
fn millis(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .context("a latency without a unit")?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse()?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        other => bail!("unknown latency unit {other:?}"),
    })
}

/// The Lua script that sends `cookies` in turn, one per request.
pub(super) fn cookie_script(cookies: &[String]) -> String {
    let mut list = String::new();
    for c in cookies {
        // Cookie values are header-safe ASCII without backslashes or quotes, for which
        // Rust's debug quoting is also a valid Lua string literal.
        let _ = write!(list, "{c:?}, ");
    }
    format!(
        "-- Generated by `bistro bench balancer`: one valid cookie per backend, in turn.
local cookies = {{ {list}}}
local i = 0
request = function()
    i = i % #cookies + 1
    return wrk.format(nil, nil, {{ [\"Cookie\"] = cookies[i] }})
end
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:37143/healthz
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.65ms    2.10ms  38.21ms   90.00%
    Req/Sec    12.45k     1.00k   14.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    5.00ms
     90%    7.00ms
     99%    1.02s
  62345 requests in 5.00s, 10.23MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:  12444.91
Transfer/sec:      2.05MB
";

    #[test]
    fn parses_the_latency_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 62345);
        assert!((r.rps - 12444.91).abs() < 1e-9);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!(r.errors, 16);
    }

    #[test]
    fn a_report_without_latency_is_an_error() {
        assert!(parse("  10 requests in 1.00s, 1KB read\nRequests/sec: 10.00\n").is_err());
    }

    #[test]
    fn the_script_cycles_through_quoted_cookies() {
        let s = cookie_script(&["a=1".into(), "SERVERID=w2".into()]);
        assert!(s.contains(r#"local cookies = { "a=1", "SERVERID=w2", }"#));
        assert!(s.contains("i = i % #cookies + 1"));
    }
}
