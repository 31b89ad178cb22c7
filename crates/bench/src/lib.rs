//! `bistro-bench`: the `bistro bench ...` commands.
//!
//! A figure about speed only means something next to a baseline measured on the same
//! machine in the same run, so every benchmark here starts its baseline itself (nginx
//! and HAProxy, a waiter alone, a minimal axum server, the stateful waiter) and reports
//! ratios to it. The processes are started through [`bistro_supervise`], on loopback,
//! with ports picked at run time; every loop is bounded in time. Linux only (`/proc`
//! for CPU time and memory).
//!
//! | command | module |
//! |---|---|
//! | `bistro bench balancer` | [`balancer`] |
//! | `bistro bench connections` | [`balancer`] (`connections`) |
//! | `bistro bench tls` | [`balancer`] (`tls`) |
//! | `bistro bench waiter` | [`balancer`] (`waiter`) |
//! | `bistro bench store` | [`store`] |
//! | `bistro bench memory` | [`memory`] |
//!
//! This crate is the commands' body, not a library for other programs: its errors are
//! `anyhow` errors, printed by the binary.

#![warn(missing_docs)]

pub mod balancer;
pub mod memory;
pub mod store;

use clap::Subcommand;

/// `bistro bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Store operations per backend, and one waiter's HTTP rate per architecture
    Store(store::BenchStoreOpts),
    /// Bytes of memory a stateful waiter spends per held session
    Memory(memory::BenchMemoryOpts),
    /// The balancer against a waiter alone, nginx and HAProxy: requests/s, p50/p99, CPU per request
    Balancer(balancer::BenchBalancerOpts),
    /// 1k and 10k keep-alive clients through the balancer, nginx and HAProxy: errors and memory
    Connections(balancer::BenchConnectionsOpts),
    /// TLS termination: handshakes/s and keep-alive TLS requests/s of the balancer against nginx and HAProxy with the same certificate
    Tls(balancer::BenchTlsOpts),
    /// The waiter against a minimal axum server answering the same bytes: requests/s, p50/p99, CPU per request
    Waiter(balancer::BenchWaiterOpts),
    /// The minimal axum server `bench waiter` measures against (started by it)
    #[command(hide = true)]
    Baseline(balancer::BaselineOpts),
}

/// Runs `command`; `ready_json` is the global `--ready-json` flag (the baseline server
/// announces itself with it, like a waiter).
///
/// # Errors
/// Whatever stopped the benchmark: a process that did not start, a failed request
/// beyond what is measured, an unwritable report.
pub async fn run(command: BenchCommand, ready_json: bool) -> anyhow::Result<()> {
    match command {
        BenchCommand::Store(opts) => store::run(opts).await,
        BenchCommand::Memory(opts) => memory::run(opts).await,
        BenchCommand::Balancer(opts) => balancer::run(opts).await,
        BenchCommand::Connections(opts) => balancer::run_connections(opts).await,
        BenchCommand::Waiter(opts) => balancer::run_waiter(opts).await,
        BenchCommand::Tls(opts) => balancer::run_tls(opts).await,
        BenchCommand::Baseline(opts) => balancer::baseline(opts, ready_json).await,
    }
}
