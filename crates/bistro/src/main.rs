//! `bistro`: one binary for the waiters, the balancer and the experiments.
//!
//! This file is glue: it parses the command line, sets up logging, and hands over to one
//! module per command. Exit codes: 0 on success, 1 on any error (printed to stderr), 2
//! for command-line usage errors (clap's own).

mod admin_cmd;
mod balancer_cmd;
mod config_file;
mod fd_limit;
mod lab_cmd;
mod logging;
mod signal;
mod tour;
mod up;
mod up_control;
mod waiter_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc: the proxy's hot path allocates per request (header maps, bodies, timers),
/// and glibc's malloc measured a few percent of the balancer's CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// bistro: run, compare and operate stateful and stateless servers.
///
/// A stateful waiter keeps your order's notes on its own notepad; a stateless one writes
/// them to a central store. Start with `bistro demo`, then `bistro tour`.
#[derive(Debug, Parser)]
#[command(name = "bistro", version, propagate_version = true)]
struct Cli {
    /// TOML config file; its `[waiter]` and `[balancer]` tables set the same options as the flags
    #[arg(long, global = true, env = "BISTRO_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, env = "BISTRO_LOG_FORMAT", default_value = "text")]
    log_format: logging::LogFormat,
    /// `bistro waiter` and `bistro balancer`: print one JSON line on stdout once listening ({"event":"ready","http":...}), for supervisors
    #[arg(long, global = true)]
    ready_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: stateful vs stateless side by side, a waiter killed mid-run, real figures
    Demo(lab_cmd::DemoOpts),
    /// Walk one scripted diner through an order's whole life on a fresh waiter
    Tour,
    /// Experiments: real clusters, simulated diners, faults, verification, reports
    #[command(subcommand)]
    Lab(lab_cmd::LabCommand),
    /// Run a waiter: the order service (HTTP/JSON)
    Waiter(waiter_cmd::WaiterOpts),
    /// Run the balancer: the manager that puts waiters behind one address
    Balancer(balancer_cmd::BalancerOpts),
    /// Start N waiters and a balancer on loopback, as child processes, until Ctrl-C
    Up(up::UpOpts),
    /// Operate a running balancer through its admin API: backends, drain, plan, status
    Admin(admin_cmd::AdminOpts),
    /// Measure bistro against baselines taken in the same run
    #[command(subcommand)]
    Bench(bistro_bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let quiet_default = matches!(
        cli.command,
        Command::Demo(_) | Command::Tour | Command::Lab(_) | Command::Bench(_) | Command::Admin(_)
    );
    logging::init(cli.log_format, if quiet_default { "warn" } else { "info" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let file = config_file::ConfigFile::load(cli.config.as_deref())?;
    match cli.command {
        Command::Demo(opts) => lab_cmd::demo(opts).await,
        Command::Tour => tour::run().await,
        Command::Lab(cmd) => lab_cmd::run(cmd).await,
        Command::Waiter(opts) => waiter_cmd::run(opts.merged_with(&file), cli.ready_json).await,
        Command::Balancer(opts) => {
            balancer_cmd::run(opts, file.balancer.as_ref(), cli.ready_json).await
        }
        Command::Up(opts) => up::run(opts).await,
        Command::Admin(opts) => {
            let file_token = file.balancer.and_then(|b| b.admin.token);
            admin_cmd::run(opts, file_token).await
        }
        Command::Bench(cmd) => bistro_bench::run(cmd, cli.ready_json).await,
    }
}
