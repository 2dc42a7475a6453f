//! `fourm-coordinator`: parses flags, builds the configuration, serves until SIGINT/SIGTERM.

mod args;

use anyhow::Context;
use clap::Parser;
use fourm_coordinator::auth::load_token;
use fourm_coordinator::server::{Storage, run};
use fourm_data::{DatasetStore, StoreConfig, read_index};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args::Args::parse();
    init_logging(args.log_json);
    let config = args.config().context("configuration")?;
    if args.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    let token = load_token(
        config.server.token_file.as_deref(),
        std::env::var("FOURM_JOB_TOKEN").ok(),
    )?;
    let dataset =
        DatasetStore::open(&config.job.dataset, StoreConfig::default()).context("dataset store")?;
    let index = read_index(&dataset)
        .await
        .context("reading the dataset index")?;
    let plan = index.plan(config.job.seed).context("epoch plan")?;
    let ckpt = DatasetStore::create(&config.job.checkpoint_root, StoreConfig::default())
        .context("checkpoint store")?;
    let storage = Storage {
        store: ckpt.inner().clone(),
        root: ckpt.root().clone(),
        url: config.job.checkpoint_root.clone(),
    };
    let grpc = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .context("binding the gRPC address")?;
    let http = tokio::net::TcpListener::bind(config.server.metrics_listen)
        .await
        .context("binding the metrics address")?;
    run(config, token, plan, storage, grpc, http, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
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
