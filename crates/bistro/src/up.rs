//! `bistro up`: a whole restaurant on loopback, as real processes.
//!
//! Starts N waiters and one balancer in front of them as child processes of this one
//! (the same `bistro` binary), over HTTP and over the TCP line protocol (each waiter on
//! a second port, the balancer's layer-4 proxy in front), prints where to reach them, prefixes and forwards their
//! logs, and on Ctrl-C or SIGTERM stops them all: SIGTERM first so in-flight requests
//! finish, SIGKILL after a grace period. Children are also killed if this process
//! fails, so `up` never leaves orphans behind.
//!
//! It also runs a process control on 127.0.0.1 (see [`up_control`]) that the balancer
//! reaches through its admin API, so the dashboard it prints a link to can kill, pause,
//! resume and restart the waiters.

use crate::up_control::{self, Control, Waiter};
use anyhow::{Context, bail};
use bistro_supervise::{Output, Proc, Spec, Stopped};
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Options of `bistro up`.
#[derive(Debug, Clone, Args)]
pub struct UpOpts {
    /// How many waiters
    #[arg(long, default_value_t = 3)]
    pub waiters: usize,
    /// stateful (notes in each waiter's memory, sticky balancer), stateless (shared store) or replicated (memory plus a copy on a peer waiter)
    #[arg(long, default_value = "stateful")]
    pub mode: bistro_waiter::Mode,
    /// Store for stateless mode [default: sqlite://bistro.db]
    #[arg(long)]
    pub store: Option<String>,
    /// Where the balancer listens
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the balancer's admin API listens
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Seconds an order cooks, passed to every waiter
    #[arg(long, default_value_t = 3.0)]
    pub kitchen_seconds: f64,
    /// Where the balancer accepts TCP line-protocol connections (`nc HOST PORT`) [default: 127.0.0.1:8090, or port 0 when --listen asks for port 0]
    #[arg(long)]
    pub tcp_listen: Option<SocketAddr>,
    /// The admin API's bearer token [default: a fresh random one, printed at start]
    #[arg(long, env = "BISTRO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve diners HTTPS (HTTP/2 and HTTP/1.1) with a loopback certificate from --tls-dir, made on first use
    #[arg(long)]
    pub tls: bool,
    /// Where --tls keeps its throwaway CA (ca.pem), certificate (cert.pem) and key (key.pem)
    #[arg(long, default_value = "bistro-tls", requires = "tls")]
    pub tls_dir: std::path::PathBuf,
}

/// The loopback certificate in `dir`: the one already there when it still loads (so a
/// CA the user trusted once stays trusted), a fresh one otherwise.
fn loopback_certs(dir: &std::path::Path) -> anyhow::Result<bistro_balancer::LoopbackCerts> {
    let existing = bistro_balancer::LoopbackCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let tls = bistro_balancer::TlsConfig {
        cert: Some(existing.cert.clone()),
        key: Some(existing.key.clone()),
        ..bistro_balancer::TlsConfig::default()
    };
    if existing.ca.exists() && bistro_balancer::TlsCerts::load(&tls).is_ok() {
        return Ok(existing);
    }
    bistro_balancer::write_loopback_certs(dir)
        .with_context(|| format!("making a loopback certificate in {}", dir.display()))
}

/// One child process and the addresses it reported.
pub struct Member {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// Its TCP (line-protocol) address, when it has one.
    pub tcp: Option<SocketAddr>,
    /// Its admin API's address, when it has one (a balancer).
    pub admin: Option<SocketAddr>,
}

impl Member {
    /// Its name (`w1`, `balancer`).
    pub fn name(&self) -> &str {
        self.proc.name()
    }
}

/// Starts `bistro ARGS --ready-json` (with `envs` added to its environment) as a child
/// named `name`, its output shown with a `[name]` prefix, and waits for its readiness
/// line on stdout, which names its addresses. The user's environment is passed on: in
/// `bistro up` their settings (log format, say) are meant for the children too.
pub async fn spawn_member(
    name: &str,
    args: &[String],
    envs: &[(&str, &str)],
) -> anyhow::Result<Member> {
    let exe = std::env::current_exe().context("locating the bistro binary")?;
    let spec = Spec::bistro(name, exe)
        .args(args)
        .envs(envs.iter().copied())
        .output(Output::Forward);
    let (proc, ready) = Proc::start(&spec, Duration::from_secs(20)).await?;
    let ready = ready.context("a bistro child's readiness line")?;
    Ok(Member {
        proc,
        addr: ready.http,
        tcp: ready.tcp,
        admin: ready.admin,
    })
}

/// Stops every member with one shared deadline: SIGTERM to all, up to `grace` for all
/// of them, then SIGKILL to the rest; says which did not stop cleanly.
pub async fn stop_all(members: Vec<Member>, grace: Duration) {
    let mut procs: Vec<Proc> = members.into_iter().map(|m| m.proc).collect();
    let outcomes = bistro_supervise::stop_all(&mut procs, grace).await;
    for (p, outcome) in procs.iter().zip(outcomes) {
        match outcome {
            Stopped::Exited(status) if status.success() => {}
            Stopped::Exited(status) => eprintln!("{} exited with {status}", p.name()),
            Stopped::Killed => eprintln!("{} did not stop within {grace:?}; killed it", p.name()),
        }
    }
}

/// `token` as it can stand in a URL fragment: unreserved characters as they are, the
/// rest percent-encoded (the page decodes it).
fn fragment_escape(token: &str) -> String {
    token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// How a waiter was started: its arguments and its extra environment.
type Started<'a> = (Vec<String>, Vec<(&'a str, &'a str)>);

/// Runs the cluster until SIGINT/SIGTERM.
pub async fn run(opts: UpOpts) -> anyhow::Result<()> {
    if opts.waiters == 0 || opts.waiters > 64 {
        bail!("--waiters must be 1 to 64");
    }
    let shutdown = crate::signal::shutdown_signal();
    let mode = opts.mode.to_string();
    // A caller that asks for an ephemeral HTTP port (tests, a second cluster) gets an
    // ephemeral TCP port too, rather than a clash on the fixed default.
    let tcp_listen = opts.tcp_listen.unwrap_or_else(|| {
        let port = if opts.listen.port() == 0 { 0 } else { 8090 };
        SocketAddr::from(([127, 0, 0, 1], port))
    });
    let tcp_strategy = match opts.mode {
        bistro_waiter::Mode::Stateful | bistro_waiter::Mode::Replicated => "consistent-hash",
        bistro_waiter::Mode::Stateless => "least-connections",
    };
    // A replicated group's waiters name each other (--peer), so their HTTP ports are
    // chosen before any starts, and they share a generated secret.
    let replicated = opts.mode == bistro_waiter::Mode::Replicated;
    let ports = if replicated {
        bistro_lab::free_ports(opts.waiters)?
    } else {
        vec![0; opts.waiters]
    };
    let peer_secret = bistro_supervise::random_hex();
    // The admin API can add backends and drain waiters: even on loopback, every local
    // process (and every web page a browser opens) could reach it, so it gets a token.
    let admin_token = match &opts.admin_token {
        Some(token) => token.clone(),
        None => bistro_supervise::random_hex(),
    };
    let tls = if opts.tls {
        Some(loopback_certs(&opts.tls_dir)?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut members = Vec::new();
    // How each waiter was started, for a restart from the dashboard.
    let mut started: Vec<Started<'_>> = Vec::new();
    // The process control (see `up_control`): bound before the balancer starts, which is
    // told where it is; served once every waiter is known.
    let control_listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("binding the process control's port on 127.0.0.1")?;
    let control_url = format!("http://{}", control_listener.local_addr()?);
    let result = async {
        for i in 1..=opts.waiters {
            let id = format!("w{i}");
            let listen = format!("127.0.0.1:{}", ports[i - 1]);
            let mut args: Vec<String> = ["waiter", "--id", &id, "--listen", &listen, "--tcp-listen", "127.0.0.1:0", "--mode", &mode]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut envs: Vec<(&str, &str)> = Vec::new();
            if replicated {
                for (j, port) in ports.iter().enumerate().filter(|(j, _)| j + 1 != i) {
                    args.extend(["--peer".into(), format!("w{}=127.0.0.1:{port}", j + 1)]);
                }
            }
            // Stateful waiters get the secret too: a drain with handoff moves their
            // sessions to each other (`bistro admin drain w2 --handoff`).
            if opts.mode != bistro_waiter::Mode::Stateless {
                envs.push(("BISTRO_PEER_SECRET", peer_secret.as_str()));
            }
            args.extend(["--kitchen-seconds".into(), opts.kitchen_seconds.to_string()]);
            // Behind the TCP balancer every line-protocol client arrives from 127.0.0.1:
            // the per-address cap would count them all as one client.
            args.extend(["--tcp-max-connections-per-ip".into(), "1024".into()]);
            if opts.mode == bistro_waiter::Mode::Stateless {
                args.extend(["--store".into(), opts.store.clone().unwrap_or_else(|| "sqlite://bistro.db".into())]);
            } else if opts.store.is_some() {
                bail!("--store is for --mode stateless; stateful and replicated waiters keep notes in their own memory");
            }
            members.push(spawn_member(&id, &args, &envs).await?);
            started.push((args, envs));
        }
        let mut args: Vec<String> = vec![
            "balancer".into(),
            "--listen".into(),
            opts.listen.to_string(),
            "--admin-listen".into(),
            opts.admin_listen.to_string(),
            "--tcp-listen".into(),
            tcp_listen.to_string(),
            // A stateful waiter's draft lives in the connection, and a reconnect should
            // find the same waiter: hash on the client IP. Stateless: spread the load.
            "--tcp-strategy".into(),
            tcp_strategy.into(),
            "--control-url".into(),
            control_url.clone(),
        ];
        if let Some(certs) = &tls {
            args.extend(["--tls-cert".into(), certs.cert.display().to_string()]);
            args.extend(["--tls-key".into(), certs.key.display().to_string()]);
        }
        for m in &members {
            args.extend(["--backend".into(), format!("{}={},mode={mode}", m.name(), m.addr)]);
            let tcp = m.tcp.with_context(|| format!("{} did not report its tcp address", m.name()))?;
            args.extend(["--tcp-backend".into(), format!("{}={tcp}", m.name())]);
        }
        // The token goes through the environment, not the command line, which any
        // local user can read in the process list.
        let envs = [
            ("BISTRO_ADMIN_TOKEN", admin_token.as_str()),
            ("BISTRO_PEER_SECRET", peer_secret.as_str()),
        ];
        members.push(spawn_member("balancer", &args, &envs).await?);
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        stop_all(members, Duration::from_secs(5)).await;
        return Err(e);
    }
    let balancer_member = members.pop().context("balancer")?;
    let balancer = balancer_member.addr;
    let admin = balancer_member.admin.unwrap_or(opts.admin_listen);
    let balancer_tcp = balancer_member.tcp;
    let waiters: Vec<Waiter> = members
        .into_iter()
        .zip(started)
        .map(|(member, (args, envs))| Waiter::new(member, args, &envs))
        .collect();
    let control = Arc::new(Control::new(admin_token.clone(), waiters));
    control_listener.set_nonblocking(true)?;
    let control_task = tokio::spawn(up_control::serve(
        tokio::net::TcpListener::from_std(control_listener)?,
        control.clone(),
    ));
    println!(
        "bistro up: {} {mode} waiters behind a balancer",
        opts.waiters
    );
    let waiters = control.waiters.lock().await;
    for w in waiters.iter() {
        println!("  waiter {:<4} http://{}", w.member.name(), w.member.addr);
    }
    println!("  balancer    {scheme}://{balancer}   (admin http://{admin})");
    if let Some(certs) = &tls {
        println!(
            "  tls         certificate {} for localhost, 127.0.0.1 and ::1, signed by the throwaway CA {}",
            certs.cert.display(),
            certs.ca.display()
        );
        println!(
            "              trust it: curl --cacert {} https://localhost:{}/v1/menu   (a browser: import the CA under its certificate authorities)",
            certs.ca.display(),
            balancer.port()
        );
    }
    println!(
        "  admin token {admin_token}   (curl -H 'authorization: Bearer {admin_token}' http://{admin}/backends)"
    );
    // The fragment (after `#`) never leaves the browser: the page reads the token from
    // it and keeps it in the tab.
    println!(
        "  dashboard   http://{admin}/#token={}   (live; drain, add, remove, and kill, pause or restart a waiter)",
        fragment_escape(&admin_token)
    );
    for w in waiters.iter() {
        if let Some(tcp) = w.member.tcp {
            println!("  tcp {:<7} tcp://{tcp}", w.member.name());
        }
    }
    drop(waiters);
    let tcp = balancer_tcp.unwrap_or(tcp_listen);
    // The certificate names localhost: curl checks it against the host it was given.
    let (try_ca, try_host) = match &tls {
        Some(certs) => (
            format!("--cacert {} ", certs.ca.display()),
            format!("localhost:{}", balancer.port()),
        ),
        None => (String::new(), balancer.to_string()),
    };
    println!(
        "  tcp         tcp://{tcp}   (balancer, {tcp_strategy} over the waiters' line protocol)"
    );
    println!(
        "try: curl -si -c jar -b jar {try_ca}{scheme}://{try_host}/v1/orders -H 'content-type: application/json' -d '{{\"items\":[{{\"dish\":\"fries\"}}]}}'"
    );
    println!(
        "try: nc {} {}   then type HELP, NEW, ADD fries 2, PLACE, STATUS (docs/protocol.md)",
        tcp.ip(),
        tcp.port()
    );
    println!("Ctrl-C stops everything.");
    shutdown.await;
    control_task.abort();
    let mut waiters = control.waiters.lock().await;
    // (A paused waiter is woken up by the supervisor before its SIGTERM.)
    let mut members: Vec<Member> = waiters.drain(..).map(|w| w.member).collect();
    members.push(balancer_member);
    stop_all(members, Duration::from_secs(15)).await;
    Ok(())
}
