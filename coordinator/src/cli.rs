//! The coordinator's command line, shared by the `fourm-coordinator` binary and `fourm
//! coordinator`: flags (each overrides the configuration file and the `FOURM_*` environment), and
//! serving until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fourm_data::{DatasetStore, StoreConfig, read_index};

use crate::auth::load_token;
use crate::config::{ConfigError, CoordinatorConfig};
use crate::server::{Storage, run};

/// The coordinator of a fourm training job: membership, ranks, data leases, checkpoint commits.
#[derive(Debug, Parser)]
#[command(name = "fourm-coordinator", version)]
pub struct Args {
    /// Configuration file (TOML; see deploy/coordinator.toml).
    #[arg(long, env = "FOURM_COORDINATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address (`server.listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP address of /metrics and /status (`server.metrics_listen`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// File holding the job token (`server.token_file`; or set FOURM_JOB_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Job identifier (`job.id`).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Dataset URL (`job.dataset`).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Checkpoint root URL (`job.checkpoint_root`).
    #[arg(long)]
    pub checkpoint_root: Option<String>,
    /// Steps of the job (`job.total_steps`).
    #[arg(long)]
    pub total_steps: Option<u64>,
    /// Checkpoint interval in steps (`job.checkpoint_every`).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Seed of the epoch plan (`job.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Workers needed to form a generation (`membership.min_workers`).
    #[arg(long)]
    pub min_workers: Option<u32>,
    /// Largest generation (`membership.max_workers`).
    #[arg(long)]
    pub max_workers: Option<u32>,
    /// Log as JSON lines (for Kubernetes) instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// The configuration used when no file is given: only what flags cannot default.
const BARE: &str =
    "[job]\nid = \"fourm\"\ndataset = \"\"\ncheckpoint_root = \"\"\ntotal_steps = 0\n";

impl Args {
    /// File, then environment, then flags; validated.
    pub fn config(&self) -> Result<CoordinatorConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => CoordinatorConfig::load(path)?,
            None => CoordinatorConfig::from_toml(BARE, std::path::Path::new("<flags>"))?,
        };
        c.apply_env(|k| std::env::var(k).ok())?;
        let j = &mut c.job;
        set(&mut c.server.listen, self.listen);
        set(&mut c.server.metrics_listen, self.metrics_listen);
        if self.token_file.is_some() {
            c.server.token_file.clone_from(&self.token_file);
        }
        set(&mut j.id, self.job_id.clone());
        set(&mut j.dataset, self.dataset.clone());
        set(&mut j.checkpoint_root, self.checkpoint_root.clone());
        set(&mut j.total_steps, self.total_steps);
        set(&mut j.checkpoint_every, self.checkpoint_every);
        set(&mut j.seed, self.seed);
        set(&mut c.membership.min_workers, self.min_workers);
        set(&mut c.membership.max_workers, self.max_workers);
        c.validate()?;
        Ok(c)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Serves the job described by `args` until SIGINT/SIGTERM (logging must be set up).
pub async fn main(args: Args) -> anyhow::Result<()> {
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

/// Logs to stderr (`RUST_LOG` overrides the default level, info).
pub fn init_logging(json: bool) {
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
