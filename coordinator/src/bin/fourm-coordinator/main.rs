//! `fourm-coordinator`: parses flags, builds the configuration, serves until SIGINT/SIGTERM.

use clap::Parser;
use fourm_coordinator::cli::{Args, main as serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fourm_process::init_logging(args.process.log_json, "info");
    serve(args).await
}
