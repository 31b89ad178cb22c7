//! `bistro up`'s process control: faults on the waiters it started, on request.
//!
//! A small HTTP endpoint on `127.0.0.1:0`, with the same bearer token as the admin API:
//! `POST /waiters/{id}/{action}` with `kill` (SIGKILL: the process and its memory are
//! gone), `pause` (SIGSTOP: it keeps its memory and sockets but answers nothing),
//! `resume` (SIGCONT) or `restart` (kill if running, then start again with the same
//! options on the same addresses, memory empty). The balancer is told its URL
//! (`--control-url`) and passes the admin API's `POST /control/{id}/{action}` on to it,
//! which is how the dashboard's fault buttons reach the processes: only `bistro up`
//! owns them. The signals go through the supervisor the lab uses ([`bistro_supervise::Proc`]), so a fault
//! clicked here is the fault the lab puts in its scenarios.
//!
//! Answers are JSON: `{"waiter","action","pid","state"}`, or a problem (401 without the
//! token, 404 for an unknown waiter or action, 409 when the waiter is not running, 500
//! when the signal or the restart failed).

use crate::up::{Member, spawn_member};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// A waiter `bistro up` started, and how to start it again.
pub struct Waiter {
    /// The running (or killed) process.
    pub member: Member,
    /// Its command line, with the addresses it actually bound (so a restart listens
    /// where the balancer expects it).
    pub args: Vec<String>,
    /// Its extra environment (secrets).
    pub envs: Vec<(String, String)>,
    /// Whether it was paused and not resumed since.
    pub paused: bool,
}

impl Waiter {
    /// Remembers how `member` was started by `args`: the `--listen` and `--tcp-listen`
    /// values become the addresses it reported, since a port 0 would pick another.
    pub fn new(member: Member, mut args: Vec<String>, envs: &[(&str, &str)]) -> Waiter {
        set_flag(&mut args, "--listen", member.addr.to_string());
        if let Some(tcp) = member.tcp {
            set_flag(&mut args, "--tcp-listen", tcp.to_string());
        }
        Waiter {
            member,
            args,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            paused: false,
        }
    }

    fn running(&mut self) -> bool {
        !self.member.proc.has_exited()
    }

    /// SIGKILL, and reap it (a paused process dies too).
    fn kill(&mut self) {
        self.member.proc.kill();
        self.paused = false;
    }
}

/// Replaces the value after `flag` in `args` (or adds the pair).
fn set_flag(args: &mut Vec<String>, flag: &str, value: String) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value,
        _ => args.extend([flag.to_string(), value]),
    }
}

/// What the control endpoint holds.
pub struct Control {
    token: String,
    /// The waiters, by the order they were started. One lock for all: faults are rare
    /// and a restart should not race a kill of the same waiter.
    pub waiters: Mutex<Vec<Waiter>>,
}

impl Control {
    pub fn new(token: String, waiters: Vec<Waiter>) -> Control {
        Control {
            token,
            waiters: Mutex::new(waiters),
        }
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, control: Arc<Control>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let control = control.clone();
        let service = service_fn(move |request| {
            let control = control.clone();
            async move { Ok::<_, Infallible>(handle(&control, request).await) }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
        });
    }
}

fn answer(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let kind = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: String) -> Response<Full<Bytes>> {
    answer(
        status,
        &json!({
            "type": format!("{}{kind}", bistro_balancer::PROBLEM_BASE),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        }),
    )
}

/// Compares without an early exit, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(token: &str, request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()))
}

async fn handle(control: &Control, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !authorized(&control.token, &request) {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Admin token required",
            "send bistro up's admin token as `Authorization: Bearer <token>`".into(),
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = request.uri().path().trim_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let ["waiters", id, action] = segments.as_slice() else {
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such control endpoint",
            "use POST /waiters/{id}/{kill|pause|resume|restart}".into(),
        );
    };
    if request.method() != Method::POST {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{} is not supported; use POST", request.method()),
        );
    }
    let mut waiters = control.waiters.lock().await;
    let Some(waiter) = waiters.iter_mut().find(|w| w.member.name() == *id) else {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-waiter",
            "Unknown waiter",
            format!("bistro up started no waiter {id:?}"),
        );
    };
    let result = act(waiter, action).await;
    match result {
        Ok(state) => {
            tracing::info!(waiter = %id, action = %action, state, "fault applied");
            answer(
                StatusCode::OK,
                &json!({
                    "waiter": id,
                    "action": action,
                    "pid": waiter.member.proc.pid(),
                    "state": state,
                }),
            )
        }
        Err(response) => response,
    }
}

/// Carries out `action` on `waiter`; its state afterwards.
async fn act(waiter: &mut Waiter, action: &str) -> Result<&'static str, Response<Full<Bytes>>> {
    let name = waiter.member.proc.name().to_string();
    let not_running = || {
        problem(
            StatusCode::CONFLICT,
            "waiter-not-running",
            "The waiter is not running",
            format!("{name} is not running; restart it first"),
        )
    };
    let failed = |e: String| {
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "control-failed",
            "The fault could not be applied",
            e,
        )
    };
    match action {
        "kill" => {
            if !waiter.running() {
                return Err(not_running());
            }
            waiter.kill();
            Ok("killed")
        }
        "pause" | "resume" => {
            if !waiter.running() {
                return Err(not_running());
            }
            let paused = action == "pause";
            let signalled = if paused {
                waiter.member.proc.pause()
            } else {
                waiter.member.proc.resume()
            };
            signalled.map_err(|e| failed(e.to_string()))?;
            waiter.paused = paused;
            Ok(if paused { "paused" } else { "running" })
        }
        "restart" => {
            if waiter.running() {
                waiter.kill();
            }
            let envs: Vec<(&str, &str)> = waiter
                .envs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let member = spawn_member(&name, &waiter.args, &envs)
                .await
                .map_err(|e| failed(format!("{name} did not start again: {e:#}")))?;
            waiter.member = member;
            Ok("running")
        }
        other => Err(problem(
            StatusCode::NOT_FOUND,
            "unknown-action",
            "Unknown control action",
            format!("{other:?} is not kill, pause, resume or restart"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_arguments_name_the_bound_addresses() {
        let mut args: Vec<String> = ["waiter", "--id", "w1", "--listen", "127.0.0.1:0"]
            .map(String::from)
            .into();
        set_flag(&mut args, "--listen", "127.0.0.1:4001".into());
        set_flag(&mut args, "--tcp-listen", "127.0.0.1:4002".into());
        assert_eq!(
            args,
            [
                "waiter",
                "--id",
                "w1",
                "--listen",
                "127.0.0.1:4001",
                "--tcp-listen",
                "127.0.0.1:4002"
            ]
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
