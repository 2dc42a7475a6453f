//! fourm's command line: the user's entry point. Each top-level command lives in its own module
//! (`data` today; launch, generate and checkpoint tools later) and returns an exit code.

pub mod data;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Dataset tools: build the index, inspect shards.
    #[command(subcommand)]
    Data(data::DataCommand),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level (errors only).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
