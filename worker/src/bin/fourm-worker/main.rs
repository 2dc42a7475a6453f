//! `fourm-worker`: parses flags, builds the configuration, trains until the job ends.

mod args;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use fourm_worker::control::Control;

// Training allocates and frees large buffers every step; mimalloc keeps them instead of paying
// page faults on every step as glibc does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args::Args::parse();
    init_logging(args.log_json);
    let config = args.config().context("configuration")?;
    if args.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    let token = match &config.coordinator.token_file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => std::env::var("FOURM_JOB_TOKEN")
            .context("no job token: set coordinator.token_file or FOURM_JOB_TOKEN")?,
    };
    let (control, join) = Control::new();
    let control = Arc::new(control);
    let on_signal = control.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupted: leaving the job");
            on_signal.shut_down();
        }
    });
    fourm_worker::run(config, token.trim().to_string(), control, join).await?;
    Ok(())
}

fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }
}
