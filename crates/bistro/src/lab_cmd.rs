//! `bistro lab run SCENARIO.toml` and `bistro demo`: run an experiment and show what
//! each architecture cost and lost.
//!
//! The lab (`bistro-lab`) starts real clusters as child processes of this binary, so it
//! is handed the path of the running executable.

use anyhow::Context;
use bistro_lab::{LabOptions, Scenario};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `bistro lab ...`
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Run a scenario: start the clusters, drive diners, inject faults, verify, report
    Run(RunOpts),
    /// Check a scenario file without running it
    Check {
        /// The scenario (TOML; see scenarios/)
        scenario: PathBuf,
    },
}

/// Options of `bistro lab run`.
#[derive(Debug, Args)]
pub struct RunOpts {
    /// The scenario (TOML; see scenarios/)
    pub scenario: PathBuf,
    /// Where report.json, index.html and the charts go
    #[arg(long, default_value = "bistro-report")]
    pub out: PathBuf,
}

/// Options of `bistro demo`.
#[derive(Debug, Args)]
pub struct DemoOpts {
    /// Where report.json, index.html and the charts go
    #[arg(long, default_value = "bistro-report")]
    pub out: PathBuf,
}

fn load(path: &PathBuf) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
    Scenario::from_toml(&text).with_context(|| format!("scenario {} is invalid", path.display()))
}

/// Runs `bistro lab ...`.
pub async fn run(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Check { scenario } => {
            let s = load(&scenario)?;
            let runs = match &s.sweep {
                Some(sweep) => format!(", each at {} distances", sweep.rtt_ms.len()),
                None => String::new(),
            };
            println!(
                "{}: valid ({} architectures{runs}, about {:.0} s)",
                scenario.display(),
                s.architectures.len(),
                s.estimated_duration().as_secs_f64()
            );
            Ok(())
        }
        LabCommand::Run(opts) => {
            let scenario = load(&opts.scenario)?;
            execute(&scenario, opts.out).await
        }
    }
}

/// Runs the canonical demo scenario on embedded defaults (no external services).
pub async fn demo(opts: DemoOpts) -> anyhow::Result<()> {
    let scenario = Scenario::demo();
    println!("bistro demo: {}", scenario.description);
    println!(
        "(about {:.0} s; Ctrl-C stops it and every process it started)\n",
        scenario.estimated_duration().as_secs_f64()
    );
    execute(&scenario, opts.out).await
}

async fn execute(scenario: &Scenario, out: PathBuf) -> anyhow::Result<()> {
    let bin = std::env::current_exe().context("locating the bistro binary")?;
    let opts = LabOptions {
        bin,
        out_dir: out.clone(),
        progress: true,
    };
    let cancel = crate::signal::shutdown_signal();
    let report = bistro_lab::run(scenario, &opts, cancel)
        .await
        .context("the lab run failed")?;
    println!("{}", report.table());
    for v in report.verdicts() {
        println!("  {v}");
    }
    println!(
        "\nreport: {}/index.html (and report.json, charts as .svg)",
        out.display()
    );
    Ok(())
}
