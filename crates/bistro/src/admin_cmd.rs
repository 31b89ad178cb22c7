//! `bistro admin`: the balancer's admin API from a terminal.
//!
//! Every subcommand is one or a few requests to the admin API (see
//! `bistro_balancer`'s `admin` module and docs/balancer.md): it prints a readable
//! summary, or with `--json` the API's own JSON answer, unchanged. `drain --wait` polls
//! the backend until its drain is over, with a progress bar on a terminal.
//!
//! Errors: a problem+json answer becomes `error: <title>: <detail>` (exit 1), with a hint
//! for the two an operator meets first: no answer at all (which URL, and `--admin`), and
//! 401 (`--token` / `BISTRO_ADMIN_TOKEN`).

use anyhow::{Context, bail};
use bistro_client::{Client, ClientError};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use std::fmt;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `drain --wait` asks for the backend's drain progress.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long `drain --wait` keeps polling through failed requests before giving up.
const POLL_PATIENCE: Duration = Duration::from_secs(5);

/// Options of `bistro admin`.
#[derive(Debug, Args)]
pub struct AdminOpts {
    /// The balancer's admin API
    #[arg(
        long = "admin",
        value_name = "URL",
        env = "BISTRO_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        value_parser = AdminUrl::parse,
        global = true
    )]
    pub admin: AdminUrl,
    /// The admin API's bearer token (`bistro up` prints the one it generated) [default: the config file's balancer.admin.token]
    #[arg(
        long,
        env = "BISTRO_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of a summary
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The subcommands of `bistro admin`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Every backend: health, mode, weight, drain, pinned sessions, connections, requests, errors
    Backends,
    /// One backend, in full
    Backend {
        /// The backend's id
        id: String,
    },
    /// Backends available, panic mode, store outage, client connections
    Status,
    /// Add a backend
    Add {
        /// Its id (what affinity cookies name)
        id: String,
        /// Its address, HOST:PORT
        address: String,
        /// Its weight [default: 1]
        #[arg(long)]
        weight: Option<u32>,
        /// Its mode [default: learnt from the waiter]
        #[arg(long, value_enum)]
        mode: Option<ModeFlag>,
    },
    /// Remove a backend at once (its pinned sessions are lost: drain it first)
    Remove {
        /// The backend's id
        id: String,
    },
    /// Change a backend's weight
    Weight {
        /// The backend's id
        id: String,
        /// The new weight
        weight: u32,
    },
    /// Send no new sessions to a backend; its pinned diners are still served
    Drain(DrainOpts),
    /// Cancel a drain: the backend takes new sessions again
    Undrain {
        /// The backend's id
        id: String,
    },
    /// What a change would do, without doing it: the sessions and new keys that would move
    Plan(PlanOpts),
}

/// Backend modes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeFlag {
    Stateful,
    Stateless,
    Replicated,
}

impl ModeFlag {
    fn as_str(self) -> &'static str {
        match self {
            ModeFlag::Stateful => "stateful",
            ModeFlag::Stateless => "stateless",
            ModeFlag::Replicated => "replicated",
        }
    }
}

/// Options of `bistro admin drain`.
#[derive(Debug, Args)]
pub struct DrainOpts {
    /// The backend's id
    pub id: String,
    /// Hand its pinned sessions over to other backends instead of waiting for them to end
    #[arg(long)]
    pub handoff: bool,
    /// Let the drain expire after this many seconds if sessions are still pinned to the backend
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<u64>,
    /// Remove the backend once its drain is done
    #[arg(long)]
    pub remove_when_done: bool,
    /// Follow the drain until it is done (exit 0) or expires (exit 1)
    #[arg(long)]
    pub wait: bool,
}

impl DrainOpts {
    /// The request body: only the options given, none at all without options.
    fn body(&self) -> Option<Value> {
        let mut body = Map::new();
        if self.handoff {
            body.insert("handoff".into(), json!(true));
        }
        if let Some(secs) = self.deadline {
            body.insert("deadline_seconds".into(), json!(secs));
        }
        if self.remove_when_done {
            body.insert("remove_when_done".into(), json!(true));
        }
        (!body.is_empty()).then_some(Value::Object(body))
    }
}

/// Options of `bistro admin plan`.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct PlanOpts {
    /// A backend that would be removed; repeat for more
    #[arg(long, value_name = "ID")]
    pub remove: Vec<String>,
    /// A backend that would be added; repeat for more
    #[arg(long, value_name = "ID=HOST:PORT", value_parser = parse_add)]
    pub add: Vec<String>,
    /// A backend's new weight; repeat for more
    #[arg(long, value_name = "ID:N", value_parser = parse_weight)]
    pub weight: Vec<String>,
}

impl PlanOpts {
    /// `/plan?remove=..&add=..&weight=..`.
    fn path(&self) -> String {
        let pairs = self
            .remove
            .iter()
            .map(|v| ("remove", v))
            .chain(self.add.iter().map(|v| ("add", v)))
            .chain(self.weight.iter().map(|v| ("weight", v)));
        let query: Vec<String> = pairs
            .map(|(k, v)| format!("{k}={}", query_escape(v)))
            .collect();
        format!("/plan?{}", query.join("&"))
    }

    /// The changes as a person reads them: `remove w2, add w4 at 127.0.0.1:7004`.
    fn describe(&self) -> String {
        let mut changes: Vec<String> = self
            .remove
            .iter()
            .map(|id| format!("remove {id}"))
            .collect();
        for add in &self.add {
            let (id, addr) = add.split_once('=').unwrap_or((add, ""));
            changes.push(format!("add {id} at {addr}"));
        }
        for weight in &self.weight {
            let (id, n) = weight.rsplit_once(':').unwrap_or((weight, ""));
            changes.push(format!("weight {id} → {n}"));
        }
        changes.join(", ")
    }
}

fn parse_add(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((id, addr)) if !id.is_empty() && !addr.is_empty() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not ID=HOST:PORT")),
    }
}

fn parse_weight(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((id, n)) if !id.is_empty() && n.parse::<u32>().is_ok() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not ID:N (N a whole number)")),
    }
}

/// Percent-encodes a query value, leaving `=`, `:`, `@` and `/` as they are (the plan's
/// values are `ID=HOST:PORT` and `ID:N`, readable in a log as they are).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:=@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where the admin API is: `http://HOST:PORT[/prefix]`.
#[derive(Debug, Clone)]
pub struct AdminUrl {
    /// The URL (with `http://` added when it was left out), for messages.
    url: String,
    /// `Host` header: the URL's authority.
    authority: String,
    host: String,
    port: u16,
    /// A path prefix (behind a reverse proxy), without a trailing `/`; usually empty.
    prefix: String,
}

impl AdminUrl {
    /// Parses `http://HOST[:PORT][/prefix]`; `HOST:PORT` alone means `http://HOST:PORT`.
    pub fn parse(s: &str) -> Result<AdminUrl, String> {
        let url = s.trim().trim_end_matches('/').to_string();
        let full = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        let uri: http::Uri = full
            .parse()
            .map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{s:?}: the admin API speaks plain HTTP, not https (reach a remote one through an SSH tunnel)"
                ));
            }
            _ => return Err(format!("{s:?} is not an http:// URL")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{s:?} names no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{s:?}: give the token with --token, not in the URL"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{s:?}: the admin URL takes no query"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(AdminUrl {
            url: full.clone(),
            authority: authority.as_str().to_string(),
            host,
            port: authority.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

impl fmt::Display for AdminUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Why an admin request failed.
#[derive(Debug)]
enum ApiError {
    /// No connection to any of the URL's addresses.
    Unreachable { url: String, why: String },
    /// A connection, but no complete answer.
    Broken { url: String, why: String },
    /// A problem+json answer.
    Problem {
        status: StatusCode,
        kind: String,
        title: String,
        detail: String,
        /// Whether a token was sent (for the 401 hint).
        had_token: bool,
    },
    /// Any other answer that is not a success.
    Status { status: StatusCode, body: String },
    /// A success whose body is not the JSON expected.
    NotJson { path: String, why: String },
}

impl ApiError {
    /// Whether this is the balancer saying the backend does not exist.
    fn is_unknown_backend(&self) -> bool {
        matches!(self, ApiError::Problem { status, kind, .. }
            if *status == StatusCode::NOT_FOUND && kind.ends_with("/unknown-backend"))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable { url, why } => write!(
                f,
                "cannot reach the balancer's admin API at {url}: {why}; is the balancer running there? \
                 Pass --admin URL (or set BISTRO_ADMIN_URL) to reach another one"
            ),
            ApiError::Broken { url, why } => {
                write!(f, "the admin API at {url} gave no complete answer: {why}")
            }
            ApiError::Problem {
                status,
                title,
                detail,
                had_token,
                ..
            } => {
                write!(f, "{title}: {detail}")?;
                if *status == StatusCode::UNAUTHORIZED {
                    if *had_token {
                        write!(
                            f,
                            " (the token given was refused: check --token or BISTRO_ADMIN_TOKEN)"
                        )?;
                    } else {
                        write!(
                            f,
                            " (pass the balancer's admin token with --token TOKEN or set BISTRO_ADMIN_TOKEN)"
                        )?;
                    }
                }
                Ok(())
            }
            ApiError::Status { status, body } => {
                let body = body.trim();
                if body.is_empty() {
                    write!(f, "the admin API answered {status}")
                } else {
                    let body: String = body.chars().take(300).collect();
                    write!(f, "the admin API answered {status}: {body}")
                }
            }
            ApiError::NotJson { path, why } => {
                write!(f, "the admin API's answer to {path} is not JSON: {why}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// A successful answer.
struct Reply {
    body: Bytes,
    /// The body as JSON (`Null` when empty).
    value: Value,
}

impl Reply {
    /// The body as sent, for `--json`.
    fn raw(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_string()
    }

    /// The raw body, or `value` when the body was empty.
    fn raw_or(&self, value: &Value) -> String {
        if self.body.is_empty() {
            value.to_string()
        } else {
            self.raw()
        }
    }
}

/// A connection to the admin API.
struct Api {
    url: AdminUrl,
    token: Option<String>,
    /// Every address the URL's host resolves to, tried in turn.
    addrs: Vec<SocketAddr>,
    /// The one that answered last.
    current: usize,
    client: Option<Client>,
}

impl Api {
    async fn new(url: AdminUrl, token: Option<String>) -> Result<Api, ApiError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| ApiError::Unreachable {
                url: url.url.clone(),
                why: format!("{} does not resolve: {e}", url.host),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ApiError::Unreachable {
                url: url.url.clone(),
                why: format!("{} resolves to no address", url.host),
            });
        }
        Ok(Api {
            url,
            token,
            addrs,
            current: 0,
            client: None,
        })
    }

    fn client(&mut self) -> Result<&Client, ApiError> {
        if self.client.is_none() {
            let client = Client::new(self.addrs[self.current])
                .with_timeout(REQUEST_TIMEOUT)
                .with_host(&self.url.authority)
                .map_err(|e| ApiError::Unreachable {
                    url: self.url.url.clone(),
                    why: e.to_string(),
                })?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("set above"))
    }

    /// One request; a connection refused on one address tries the next.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        let full_path = format!("{}{path}", self.url.prefix);
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("authorization", b))
            .into_iter()
            .collect();
        let mut tried = 0;
        let response = loop {
            let client = self.client()?;
            match client
                .request(method.clone(), &full_path, &headers, body)
                .await
            {
                Ok(response) => break response,
                Err(e) if e.is_connect() && tried + 1 < self.addrs.len() => {
                    tried += 1;
                    self.current = (self.current + 1) % self.addrs.len();
                    self.client = None;
                }
                Err(e) => {
                    self.client = None;
                    let url = self.url.url.clone();
                    return Err(match e {
                        ClientError::Connect { source, .. } => ApiError::Unreachable {
                            url,
                            why: source.to_string(),
                        },
                        ClientError::Timeout(after) => ApiError::Broken {
                            url,
                            why: format!("no answer within {after:?}"),
                        },
                        other => ApiError::Broken {
                            url,
                            why: other.to_string(),
                        },
                    });
                }
            }
        };
        if !response.status.is_success() {
            let problem = response
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("application/problem+json"));
            let value = response.value();
            if problem
                && let (Some(title), Some(detail)) =
                    (value["title"].as_str(), value["detail"].as_str())
            {
                return Err(ApiError::Problem {
                    status: response.status,
                    kind: value["type"].as_str().unwrap_or("").to_string(),
                    title: title.to_string(),
                    detail: detail.to_string(),
                    had_token: self.token.is_some(),
                });
            }
            return Err(ApiError::Status {
                status: response.status,
                body: response.text(),
            });
        }
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).map_err(|e| ApiError::NotJson {
                path: full_path.clone(),
                why: e.to_string(),
            })?
        };
        Ok(Reply {
            body: response.body,
            value,
        })
    }

    async fn get(&mut self, path: &str) -> Result<Reply, ApiError> {
        self.call(Method::GET, path, None).await
    }
}

/// Runs `bistro admin`. `file_token` is the config file's `balancer.admin.token`, used
/// when neither `--token` nor `BISTRO_ADMIN_TOKEN` gives one.
pub async fn run(opts: AdminOpts, file_token: Option<String>) -> anyhow::Result<()> {
    let json = opts.json;
    // An empty token (`BISTRO_ADMIN_TOKEN=`) is no token.
    let token = opts.token.or(file_token).filter(|t| !t.is_empty());
    let mut api = Api::new(opts.admin, token).await?;
    match opts.command {
        AdminCommand::Backends => {
            let reply = api.get("/backends").await?;
            if json {
                println!("{}", reply.raw());
            } else {
                let backends = reply
                    .value
                    .as_array()
                    .context("GET /backends is not a list")?;
                print!("{}", backends_table(backends));
            }
        }
        AdminCommand::Backend { id } => {
            let reply = api.get(&backend_path(&id, "")).await?;
            if json {
                println!("{}", reply.raw());
            } else {
                print!("{}", backend_details(&reply.value));
            }
        }
        AdminCommand::Status => {
            let reply = api.get("/status").await?;
            if json {
                println!("{}", reply.raw());
            } else {
                print!("{}", status_details(&reply.value));
            }
        }
        AdminCommand::Add {
            id,
            address,
            weight,
            mode,
        } => {
            let mut body = json!({"id": id, "address": address});
            if let Some(weight) = weight {
                body["weight"] = json!(weight);
            }
            if let Some(mode) = mode {
                body["mode"] = json!(mode.as_str());
            }
            let reply = api.call(Method::POST, "/backends", Some(&body)).await?;
            if json {
                println!("{}", reply.raw());
            } else {
                let v = &reply.value;
                println!(
                    "added {id} at {} (weight {}, mode {})",
                    text(&v["address"]),
                    text(&v["weight"]),
                    text(&v["mode"])
                );
            }
        }
        AdminCommand::Remove { id } => {
            let reply = api
                .call(Method::DELETE, &backend_path(&id, ""), None)
                .await?;
            if json {
                // 204: nothing to print but what the API sent.
                if !reply.body.is_empty() {
                    println!("{}", reply.raw());
                }
            } else {
                println!("removed {id}");
            }
        }
        AdminCommand::Weight { id, weight } => {
            let body = json!({ "weight": weight });
            let reply = api
                .call(Method::POST, &backend_path(&id, "/weight"), Some(&body))
                .await?;
            if json {
                println!("{}", reply.raw());
            } else {
                println!("{id} now has weight {}", text(&reply.value["weight"]));
            }
        }
        AdminCommand::Undrain { id } => {
            let reply = api
                .call(Method::POST, &backend_path(&id, "/undrain"), None)
                .await?;
            if json {
                println!("{}", reply.raw());
            } else {
                println!("{id} takes new sessions again");
            }
        }
        AdminCommand::Drain(drain) => run_drain(&mut api, drain, json).await?,
        AdminCommand::Plan(plan) => {
            let reply = api.get(&plan.path()).await?;
            if json {
                println!("{}", reply.raw());
            } else {
                print!("{}", plan_summary(&plan.describe(), &reply.value));
            }
        }
    }
    Ok(())
}

/// `/backends/{id}{rest}`, the id escaped.
fn backend_path(id: &str, rest: &str) -> String {
    let id: String = id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("/backends/{id}{rest}")
}

async fn run_drain(api: &mut Api, opts: DrainOpts, json: bool) -> anyhow::Result<()> {
    let body = opts.body();
    let reply = api
        .call(
            Method::POST,
            &backend_path(&opts.id, "/drain"),
            body.as_ref(),
        )
        .await?;
    let view = &reply.value;
    let reports_progress = view.get("drain").is_some();
    if !opts.wait {
        if json {
            println!("{}", reply.raw_or(view));
        } else {
            println!("{}", drain_started(&opts.id, view));
        }
        if body.is_some() && !reports_progress {
            eprintln!(
                "warning: this balancer does not report drain progress, so it predates --handoff, \
                 --deadline and --remove-when-done and probably ignored them"
            );
        }
        return Ok(());
    }
    if !reports_progress {
        bail!(
            "{} is draining, but this balancer does not report drain progress, so --wait cannot \
             follow it; watch `bistro admin backends` instead",
            opts.id
        );
    }
    if !json {
        println!("{}", drain_started(&opts.id, view));
    }
    follow_drain(api, &opts.id, reply.value, json).await
}

/// The figures of a drain, as the backend view carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DrainFigures {
    moved: u64,
    lost: u64,
    left: Option<u64>,
}

impl DrainFigures {
    fn of(drain: &Value) -> DrainFigures {
        DrainFigures {
            moved: drain["moved"].as_u64().unwrap_or(0),
            lost: drain["lost"].as_u64().unwrap_or(0),
            left: drain["sessions_left"].as_u64(),
        }
    }

    /// Sessions on the backend when the drain started, as far as the figures tell.
    fn total(&self) -> Option<u64> {
        self.left.map(|left| left + self.moved + self.lost)
    }
}

/// The progress display of `drain --wait`: a bar on a terminal, a line a second otherwise.
struct DrainProgress {
    id: String,
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    last_line: Option<Instant>,
}

impl DrainProgress {
    fn new(id: &str, total: u64) -> DrainProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} moved  {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("draining {id}"));
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        DrainProgress {
            id: id.to_string(),
            bar,
            total,
            last_line: None,
        }
    }

    fn show(&mut self, drain: &Value) {
        let figures = DrainFigures::of(drain);
        if let Some(total) = figures.total()
            && total > self.total
        {
            self.total = total;
        }
        let message = progress_message(drain, unix_now());
        match &self.bar {
            Some(bar) => {
                bar.set_length(self.total);
                bar.set_position(figures.moved);
                bar.set_message(message);
            }
            None => {
                if self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    self.last_line = Some(Instant::now());
                    eprintln!(
                        "draining {}: {}/{} moved, {message}",
                        self.id, figures.moved, self.total
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `12 left, 0 lost, deadline in 25 s`.
fn progress_message(drain: &Value, now: u64) -> String {
    let figures = DrainFigures::of(drain);
    let left = figures.left.map_or_else(
        || "sessions left unknown".to_string(),
        |n| format!("{n} left"),
    );
    let mut message = format!("{left}, {} lost", figures.lost);
    if let Some(deadline) = drain["deadline_at"].as_u64() {
        message.push_str(&format!(", deadline in {} s", deadline.saturating_sub(now)));
    }
    message
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Polls the backend until its drain is done (or it is removed) or expired.
async fn follow_drain(api: &mut Api, id: &str, first: Value, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let start_total = DrainFigures::of(&first["drain"])
        .total()
        .or_else(|| first["sessions_pinned"].as_u64())
        .unwrap_or(0);
    let mut progress = DrainProgress::new(id, start_total);
    let mut view = first;
    let mut removed = false;
    let mut failing_since: Option<Instant> = None;
    loop {
        if removed {
            break;
        }
        let drain = &view["drain"];
        match drain["state"].as_str() {
            Some("done") => break,
            Some("expired") => {
                progress.finish();
                if json {
                    println!("{view}");
                }
                let figures = DrainFigures::of(drain);
                let left = figures
                    .left
                    .map_or_else(|| "sessions".to_string(), |n| format!("{n} sessions"));
                bail!(
                    "the drain of {id} expired at its deadline with {left} still on it ({} moved, {} lost)",
                    figures.moved,
                    figures.lost
                );
            }
            None if drain.is_null() => {
                progress.finish();
                bail!("the drain of {id} was cancelled (undrained) before it was done");
            }
            _ => progress.show(drain),
        }
        tokio::time::sleep(POLL_EVERY).await;
        match api.get(&backend_path(id, "")).await {
            Ok(reply) => {
                failing_since = None;
                view = reply.value;
            }
            Err(e) if e.is_unknown_backend() => removed = true,
            Err(e @ (ApiError::Unreachable { .. } | ApiError::Broken { .. })) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= POLL_PATIENCE {
                    progress.finish();
                    return Err(anyhow::Error::new(e).context(format!(
                        "lost track of the drain of {id} (it goes on without this command)"
                    )));
                }
            }
            Err(e) => {
                progress.finish();
                return Err(e.into());
            }
        }
    }
    progress.finish();
    if removed {
        // The backend is gone, and its view with it: the balancer keeps what the drain
        // did under `GET /drains`.
        if let Ok(drains) = api.get("/drains").await
            && drains.value[id].is_object()
        {
            view = serde_json::json!({ "id": id, "drain": drains.value[id].clone() });
        }
    }
    if json {
        println!("{view}");
        return Ok(());
    }
    let figures = DrainFigures::of(&view["drain"]);
    let took = started.elapsed().as_secs_f64();
    let how = if removed {
        "drained and removed"
    } else {
        "drained"
    };
    println!(
        "{id} {how} in {took:.1} s: {} sessions moved, {} lost",
        figures.moved, figures.lost
    );
    Ok(())
}

/// The line printed when a drain starts.
fn drain_started(id: &str, view: &Value) -> String {
    let drain = &view["drain"];
    if drain.is_object() {
        format!("{id} is {}", drain_text(drain, unix_now()))
    } else {
        format!(
            "{id} is draining: no new sessions; its {} pinned sessions are still served",
            text(&view["sessions_pinned"])
        )
    }
}

/// A drain in a few words: `draining: 12 left, 40 moved, 0 lost (handoff, deadline in 25 s)`.
fn drain_text(drain: &Value, now: u64) -> String {
    let state = drain["state"].as_str().unwrap_or("draining");
    let figures = DrainFigures::of(drain);
    let mut parts = Vec::new();
    if let Some(left) = figures.left
        && state != "done"
    {
        parts.push(format!("{left} left"));
    }
    parts.push(format!("{} moved", figures.moved));
    parts.push(format!("{} lost", figures.lost));
    let mut text = format!("{state}: {}", parts.join(", "));
    let mut notes = Vec::new();
    if drain["handoff"].as_bool() == Some(true) {
        notes.push("handoff".to_string());
    }
    if state == "draining"
        && let Some(deadline) = drain["deadline_at"].as_u64()
    {
        notes.push(format!("deadline in {} s", deadline.saturating_sub(now)));
    }
    if !notes.is_empty() {
        text.push_str(&format!(" ({})", notes.join(", ")));
    }
    text
}

/// The drain column of the backends table.
fn drain_cell(view: &Value) -> String {
    let drain = &view["drain"];
    if drain.is_object() {
        drain_text(drain, unix_now())
    } else if view["draining"].as_bool() == Some(true) {
        "draining".into()
    } else {
        "-".into()
    }
}

/// A JSON scalar as plain text (`-` when absent or null).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// `down (refused)` for a backend that is not up and says why.
fn health_cell(view: &Value) -> String {
    let health = text(&view["health"]);
    match view["reason"].as_str() {
        Some(reason) if reason != "none" && health != "up" => format!("{health} ({reason})"),
        _ => health,
    }
}

/// Columns padded to their widest cell; numeric columns aligned right.
fn table(headers: &[&str], rows: &[Vec<String>], numeric: &[bool]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            let last = i + 1 == cells.len();
            if numeric.get(i).copied().unwrap_or(false) {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if !last {
                    out.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                out.push_str("  ");
            }
        }
        out.push('\n');
        out
    };
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = line(&headers);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn backends_table(backends: &[Value]) -> String {
    if backends.is_empty() {
        return "no backends\n".into();
    }
    let headers = [
        "ID", "ADDRESS", "HEALTH", "MODE", "WEIGHT", "DRAIN", "PINNED", "ACTIVE", "REQUESTS",
        "ERRORS",
    ];
    let numeric = [
        false, false, false, false, true, false, true, true, true, true,
    ];
    let rows: Vec<Vec<String>> = backends
        .iter()
        .map(|b| {
            vec![
                text(&b["id"]),
                text(&b["address"]),
                health_cell(b),
                text(&b["mode"]),
                text(&b["weight"]),
                drain_cell(b),
                text(&b["sessions_pinned"]),
                text(&b["active_connections"]),
                text(&b["requests"]),
                text(&b["errors"]),
            ]
        })
        .collect();
    table(&headers, &rows, &numeric)
}

/// `label  value` lines, labels padded.
fn details(lines: &[(String, String)]) -> String {
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

/// The fields `shown` were already printed; the others follow as `key  value`.
fn remaining(object: &Value, shown: &[&str]) -> Vec<(String, String)> {
    object
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !shown.contains(&k.as_str()))
                .map(|(k, v)| {
                    let value = if v.is_object() || v.is_array() {
                        v.to_string()
                    } else {
                        text(v)
                    };
                    (k.replace('_', " "), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn backend_details(view: &Value) -> String {
    let mut lines = vec![
        ("id".to_string(), text(&view["id"])),
        ("address".into(), text(&view["address"])),
        ("health".into(), health_cell(view)),
    ];
    if let Some(ms) = view["down_for_ms"].as_u64()
        && ms > 0
    {
        lines.push(("down for".into(), format!("{:.1} s", ms as f64 / 1000.0)));
    }
    lines.extend([
        ("mode".into(), text(&view["mode"])),
        ("weight".into(), text(&view["weight"])),
        ("drain".into(), drain_cell(view)),
        ("sessions pinned".into(), text(&view["sessions_pinned"])),
        (
            "connections".into(),
            format!(
                "{} active, {} idle, {} queued",
                text(&view["active_connections"]),
                text(&view["idle_connections"]),
                text(&view["queued"])
            ),
        ),
        ("requests".into(), text(&view["requests"])),
        ("errors".into(), text(&view["errors"])),
    ]);
    lines.extend(remaining(
        view,
        &[
            "id",
            "address",
            "health",
            "reason",
            "down_for_ms",
            "mode",
            "weight",
            "draining",
            "drain",
            "sessions_pinned",
            "active_connections",
            "idle_connections",
            "queued",
            "requests",
            "errors",
        ],
    ));
    details(&lines)
}

fn status_details(status: &Value) -> String {
    let mut lines = vec![
        (
            "backends".to_string(),
            format!(
                "{} ({} available)",
                text(&status["backends"]),
                text(&status["backends_available"])
            ),
        ),
        ("panic mode".into(), text(&status["panic_mode"])),
        ("store outage".into(), text(&status["store_outage"])),
        (
            "client connections".into(),
            format!(
                "{} of at most {}",
                text(&status["client_connections"]),
                text(&status["max_connections"])
            ),
        ),
    ];
    lines.extend(remaining(
        status,
        &[
            "backends",
            "backends_available",
            "panic_mode",
            "store_outage",
            "client_connections",
            "max_connections",
        ],
    ));
    details(&lines)
}

/// A share (0 to 1) as a percentage.
fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |f| format!("{:.1}%", f * 100.0))
}

/// `w2 → w1 60, w2 → w3 60`; a flow to nowhere is `lost`.
fn flows(list: &Value, amount: impl Fn(&Value) -> String) -> String {
    list.as_array()
        .map(|flows| {
            flows
                .iter()
                .map(|f| {
                    let to = match &f["to"] {
                        Value::Null => "(lost)".to_string(),
                        other => text(other),
                    };
                    format!("{} → {to} {}", text(&f["from"]), amount(f))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `1 → 2`, or just `1` when unchanged; `-` for a side that does not exist.
fn before_after(
    before: &Value,
    after: &Value,
    field: &str,
    show: impl Fn(&Value) -> String,
) -> String {
    let b = if before.is_object() {
        show(&before[field])
    } else {
        "-".into()
    };
    let a = if after.is_object() {
        show(&after[field])
    } else {
        "-".into()
    };
    if a == b { a } else { format!("{b} → {a}") }
}

/// The readable form of `GET /plan`.
fn plan_summary(changes: &str, plan: &Value) -> String {
    let mut out = format!("plan: {changes}");
    if let Some(strategy) = plan["strategy"].as_str() {
        out.push_str(&format!(" (strategy {strategy})"));
    }
    out.push('\n');
    if let Some(backends) = plan["backends"].as_array()
        && !backends.is_empty()
    {
        let rows: Vec<Vec<String>> = backends
            .iter()
            .map(|b| {
                vec![
                    text(&b["id"]),
                    before_after(&b["before"], &b["after"], "weight", text),
                    before_after(&b["before"], &b["after"], "share", percent),
                    text(&b["sessions"]),
                ]
            })
            .collect();
        for line in table(
            &["BACKEND", "WEIGHT", "SHARE", "PINNED"],
            &rows,
            &[false, false, false, true],
        )
        .lines()
        {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    let sessions = &plan["sessions"];
    match sessions["moving"].as_u64() {
        Some(0) => out.push_str("no pinned session would move"),
        Some(moving) => {
            let s = if moving == 1 { "" } else { "s" };
            out.push_str(&format!("{moving} pinned session{s} would move"));
            let flows = flows(&sessions["flows"], |f| text(&f["sessions"]));
            if !flows.is_empty() {
                out.push_str(&format!(": {flows}"));
            }
        }
        None => out.push_str("pinned sessions: not reported"),
    }
    out.push_str("; ");
    let keys = &plan["new_keys"];
    let how = if keys["exact"].as_bool() == Some(true) {
        "exact"
    } else {
        "estimated"
    };
    out.push_str(&format!(
        "{} of new keys would move ({how})",
        percent(&keys["moved_share"])
    ));
    let flows = flows(&keys["flows"], |f| percent(&f["share"]));
    if !flows.is_empty() {
        out.push_str(&format!(": {flows}"));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        let u = AdminUrl::parse("http://127.0.0.1:8081/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 8081, "")
        );
        assert_eq!(u.authority, "127.0.0.1:8081");
        assert_eq!(u.to_string(), "http://127.0.0.1:8081");
        let u = AdminUrl::parse("localhost:9").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("localhost", 9));
        assert_eq!(u.to_string(), "http://localhost:9");
        let u = AdminUrl::parse("http://[::1]:8081/lb/admin").unwrap();
        assert_eq!((u.host.as_str(), u.prefix.as_str()), ("::1", "/lb/admin"));
        assert_eq!(u.authority, "[::1]:8081");
        assert_eq!(AdminUrl::parse("http://admin.internal").unwrap().port, 80);
        assert!(
            AdminUrl::parse("https://x:1")
                .unwrap_err()
                .contains("plain HTTP")
        );
        assert!(
            AdminUrl::parse("http://t@x:1")
                .unwrap_err()
                .contains("--token")
        );
        assert!(AdminUrl::parse("ftp://x").is_err());
    }

    #[test]
    fn plan_queries_keep_their_separators() {
        let plan = PlanOpts {
            remove: vec!["w2".into()],
            add: vec!["w4=127.0.0.1:7004".into()],
            weight: vec!["w1:3".into(), "a b:2".into()],
        };
        assert_eq!(
            plan.path(),
            "/plan?remove=w2&add=w4=127.0.0.1:7004&weight=w1:3&weight=a%20b:2"
        );
        assert_eq!(
            plan.describe(),
            "remove w2, add w4 at 127.0.0.1:7004, weight w1 → 3, weight a b → 2"
        );
        assert!(parse_add("w4").is_err());
        assert!(parse_add("=x").is_err());
        assert!(parse_weight("w1:x").is_err());
        assert!(parse_weight("w1").is_err());
        assert!(parse_weight("w:1:2").is_ok());
        assert_eq!(backend_path("a/b c", "/drain"), "/backends/a%2Fb%20c/drain");
    }

    #[test]
    fn drain_bodies_carry_only_what_was_given() {
        let mut opts = DrainOpts {
            id: "w1".into(),
            handoff: false,
            deadline: None,
            remove_when_done: false,
            wait: true,
        };
        assert_eq!(opts.body(), None);
        opts.handoff = true;
        opts.deadline = Some(30);
        assert_eq!(
            opts.body(),
            Some(json!({"handoff": true, "deadline_seconds": 30}))
        );
    }

    #[test]
    fn drains_in_words() {
        let drain = json!({"state": "draining", "handoff": true, "sessions_left": 12,
            "moved": 40, "lost": 1, "started_at": 1000, "deadline_at": 1030});
        assert_eq!(
            drain_text(&drain, 1005),
            "draining: 12 left, 40 moved, 1 lost (handoff, deadline in 25 s)"
        );
        assert_eq!(DrainFigures::of(&drain).total(), Some(53));
        assert_eq!(
            progress_message(&drain, 1005),
            "12 left, 1 lost, deadline in 25 s"
        );
        let done = json!({"state": "done", "handoff": false, "sessions_left": 0, "moved": 0,
            "lost": 0, "started_at": 1000, "deadline_at": 1030});
        assert_eq!(drain_text(&done, 2000), "done: 0 moved, 0 lost");
        let unknown = json!({"state": "draining", "sessions_left": null, "moved": 0, "lost": 0});
        assert_eq!(
            progress_message(&unknown, 0),
            "sessions left unknown, 0 lost"
        );
        assert_eq!(drain_cell(&json!({"draining": true})), "draining");
        assert_eq!(drain_cell(&json!({"draining": false, "drain": null})), "-");
    }

    #[test]
    fn the_backends_table_lines_up() {
        let backends = vec![
            json!({"id":"w1","address":"127.0.0.1:7001","weight":1,"health":"up","reason":"none",
                "mode":"stateful","draining":false,"active_connections":0,"sessions_pinned":3,
                "requests":120,"errors":0}),
            json!({"id":"w22","address":"127.0.0.1:7002","weight":2,"health":"down","reason":"refused",
                "mode":"unknown","draining":true,"active_connections":0,"sessions_pinned":0,
                "requests":5,"errors":5}),
        ];
        let t = backends_table(&backends);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID   ADDRESS"), "{t}");
        assert!(lines[1].contains("up "), "{t}");
        assert!(lines[2].contains("down (refused)"), "{t}");
        assert!(lines[2].contains("draining"), "{t}");
        assert_eq!(
            lines[0].find("REQUESTS").map(|i| i + "REQUESTS".len()),
            lines[1].find("120").map(|i| i + 3),
            "numbers align right: {t}"
        );
        assert_eq!(backends_table(&[]), "no backends\n");
    }

    #[test]
    fn plans_in_words() {
        let plan = json!({
            "strategy": "consistent-hash",
            "changes": [{"op": "remove", "id": "w2"}],
            "backends": [
                {"id": "w1", "before": {"weight": 1, "share": 0.3333}, "after": {"weight": 1, "share": 0.5}, "sessions": 120},
                {"id": "w2", "before": {"weight": 1, "share": 0.3333}, "after": null, "sessions": 120},
                {"id": "w3", "before": {"weight": 1, "share": 0.3334}, "after": {"weight": 1, "share": 0.5}, "sessions": 118}
            ],
            "sessions": {"moving": 120, "flows": [{"from": "w2", "to": "w1", "sessions": 60}, {"from": "w2", "to": "w3", "sessions": 60}]},
            "new_keys": {"moved_share": 0.3333, "exact": true, "flows": [{"from": "w2", "to": "w1", "share": 0.1667}, {"from": "w2", "to": "w3", "share": 0.1666}]}
        });
        let s = plan_summary("remove w2", &plan);
        assert!(
            s.starts_with("plan: remove w2 (strategy consistent-hash)\n"),
            "{s}"
        );
        assert!(s.contains("33.3% → 50.0%"), "{s}");
        assert!(s.contains("1 → -"), "{s}");
        assert!(
            s.contains(
                "120 pinned sessions would move: w2 → w1 60, w2 → w3 60; 33.3% of new keys would move (exact): w2 → w1 16.7%, w2 → w3 16.7%"
            ),
            "{s}"
        );
        let none = json!({"sessions": {"moving": 0, "flows": []}, "new_keys": {"moved_share": 0.0, "exact": false, "flows": []}});
        assert!(
            plan_summary("weight w1 → 1", &none)
                .contains("no pinned session would move; 0.0% of new keys would move (estimated)")
        );
    }

    #[test]
    fn problems_read_as_title_and_detail_with_hints() {
        let e = ApiError::Problem {
            status: StatusCode::UNAUTHORIZED,
            kind: "https://bistro.dev/problems/unauthorized".into(),
            title: "Admin token required".into(),
            detail: "send it".into(),
            had_token: false,
        };
        assert_eq!(
            e.to_string(),
            "Admin token required: send it (pass the balancer's admin token with --token TOKEN or set BISTRO_ADMIN_TOKEN)"
        );
        let e = ApiError::Problem {
            status: StatusCode::NOT_FOUND,
            kind: "https://bistro.dev/problems/unknown-backend".into(),
            title: "Unknown backend".into(),
            detail: "no backend w9".into(),
            had_token: true,
        };
        assert!(e.is_unknown_backend());
        assert_eq!(e.to_string(), "Unknown backend: no backend w9");
        let e = ApiError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            why: "Connection refused".into(),
        };
        assert!(e.to_string().contains("http://127.0.0.1:1"));
        assert!(e.to_string().contains("--admin"));
    }
}
