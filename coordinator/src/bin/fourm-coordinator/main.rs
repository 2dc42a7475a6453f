//! `fourm-coordinator`: parses flags, builds the configuration, serves until SIGINT/SIGTERM.

use clap::Parser;
use fourm_coordinator::cli::{Args, init_logging, main as serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    serve(args).await
}
