//! fourm's command line: the user's entry point. Each top-level command lives in its own module
//! and returns an exit code. `fourm coordinator` and `fourm worker` are the same programs as
//! `fourm-coordinator` and `fourm-worker`, so that one binary can run a whole local job.

pub mod data;
pub mod eval;
pub mod generate;
pub mod launch;
pub mod plan_memory;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fourm_process::init_logging;

/// fourm: train 4M models across many GPUs and use them for any-to-any generation.
#[derive(Debug, Parser)]
#[command(name = "fourm", version, about)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text (`RUST_LOG` sets the level).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train on this machine: a coordinator and N workers as child processes, a synthetic dataset
    /// written on first use, checkpoints and a loss curve in the job folder.
    Launch(launch::LaunchArgs),
    /// Any-to-any generation from a checkpoint: conditions from files, targets written as tokens,
    /// pictures and text.
    Generate(generate::GenerateArgs),
    /// What a checkpoint learned: held-out loss per modality, and cross-modal tasks scored
    /// against the ground truth next to trivial baselines (eval.json, samples.png).
    Eval(eval::EvalArgs),
    /// Memory one rank needs to train a preset (parameters, gradients, optimizer state,
    /// activations), computed from the sizes.
    PlanMemory(plan_memory::PlanMemoryArgs),
    /// Dataset tools: build the index, inspect shards.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Run a coordinator (the same as `fourm-coordinator`).
    #[command(hide = true)]
    Coordinator(fourm_coordinator::cli::Args),
    /// Run a worker (the same as `fourm-worker`).
    #[command(hide = true)]
    Worker(fourm_worker::cli::Args),
}

/// The `fourm` program: parses the command line, runs it, prints an error.
pub fn main() -> ExitCode {
    // Tests inject faults through the `FAILPOINTS` environment variable.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    fourm_model::allocator::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line (and sets up its logging: errors only for the interactive commands,
/// which show progress instead; info for the coordinator and the worker).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Launch(args) => {
            init_logging(cli.log_json, "error");
            launch::run(args)
        }
        Command::Generate(args) => {
            init_logging(cli.log_json, "error");
            generate::run(args)
        }
        Command::Eval(args) => {
            init_logging(cli.log_json, "error");
            eval::run(args)
        }
        Command::PlanMemory(args) => plan_memory::run(args),
        Command::Data(cmd) => {
            init_logging(cli.log_json, "error");
            data::run(cmd)
        }
        Command::Coordinator(args) => {
            init_logging(cli.log_json || args.process.log_json, "info");
            runtime()?.block_on(fourm_coordinator::cli::main(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            init_logging(cli.log_json || args.process.log_json, "info");
            runtime()?.block_on(fourm_worker::cli::main(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The multi-threaded async runtime every command runs its I/O on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))
}
