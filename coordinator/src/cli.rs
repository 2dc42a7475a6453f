//! The coordinator's command line, shared by the `fourm-coordinator` binary and `fourm
//! coordinator`: flags and their `FOURM_*` variables over the configuration file, and serving until
//! SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fourm_data::{DatasetStore, StoreConfig, read_index};

use fourm_process::{ProcessFlags, overlay, shutdown_signal};
use tracing::Instrument;

use crate::auth::load_token;
use crate::config::{ConfigError, CoordinatorConfig};
use crate::server::{Storage, run};

/// The coordinator of a fourm training job: membership, ranks, data leases, checkpoint commits.
///
/// Every setting comes from the configuration file, then its `FOURM_*` environment variable, then
/// its flag, each overriding the previous.
#[derive(Debug, Parser)]
#[command(name = "fourm-coordinator", version)]
pub struct Args {
    /// Configuration file (TOML; see deploy/coordinator.toml).
    #[arg(long, env = "FOURM_COORDINATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address (`server.listen`).
    #[arg(long, env = "FOURM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP address of /metrics and /status (`server.metrics_listen`).
    #[arg(long, env = "FOURM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// File holding the job token (`server.token_file`).
    #[arg(long, env = "FOURM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The job token itself, from the environment only (a Kubernetes Secret).
    #[arg(long, env = "FOURM_JOB_TOKEN", hide = true, hide_env_values = true)]
    pub job_token: Option<String>,
    /// Job identifier (`job.id`).
    #[arg(long, env = "FOURM_JOB_ID")]
    pub job_id: Option<String>,
    /// Dataset URL (`job.dataset`).
    #[arg(long, env = "FOURM_DATASET")]
    pub dataset: Option<String>,
    /// Checkpoint root URL (`job.checkpoint_root`).
    #[arg(long, env = "FOURM_CHECKPOINT_ROOT")]
    pub checkpoint_root: Option<String>,
    /// Steps of the job (`job.total_steps`).
    #[arg(long, env = "FOURM_TOTAL_STEPS")]
    pub total_steps: Option<u64>,
    /// Checkpoint interval in steps (`job.checkpoint_every`).
    #[arg(long, env = "FOURM_CHECKPOINT_EVERY")]
    pub checkpoint_every: Option<u64>,
    /// Seed of the epoch plan (`job.seed`).
    #[arg(long, env = "FOURM_SEED")]
    pub seed: Option<u64>,
    /// Workers needed to form a generation (`membership.min_workers`).
    #[arg(long, env = "FOURM_MIN_WORKERS")]
    pub min_workers: Option<u32>,
    /// Largest generation (`membership.max_workers`).
    #[arg(long, env = "FOURM_MAX_WORKERS")]
    pub max_workers: Option<u32>,
    /// Logging and configuration checks.
    #[command(flatten)]
    pub process: ProcessFlags,
}

/// The configuration used when no file is given: only what flags cannot default.
const BARE: &str =
    "[job]\nid = \"fourm\"\ndataset = \"\"\ncheckpoint_root = \"\"\ntotal_steps = 0\n";

impl Args {
    /// File, then environment and flags; validated.
    pub fn config(&self) -> Result<CoordinatorConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => CoordinatorConfig::load(path)?,
            None => CoordinatorConfig::from_toml(BARE, std::path::Path::new("<flags>"))?,
        };
        let j = &mut c.job;
        overlay(&mut c.server.listen, self.listen);
        overlay(&mut c.server.metrics_listen, self.metrics_listen);
        if self.token_file.is_some() {
            c.server.token_file.clone_from(&self.token_file);
        }
        overlay(&mut j.id, self.job_id.clone());
        overlay(&mut j.dataset, self.dataset.clone());
        overlay(&mut j.checkpoint_root, self.checkpoint_root.clone());
        overlay(&mut j.total_steps, self.total_steps);
        overlay(&mut j.checkpoint_every, self.checkpoint_every);
        overlay(&mut j.seed, self.seed);
        overlay(&mut c.membership.min_workers, self.min_workers);
        overlay(&mut c.membership.max_workers, self.max_workers);
        c.validate()?;
        Ok(c)
    }
}

/// Serves the job described by `args` until SIGINT/SIGTERM (logging must be set up).
pub async fn main(args: Args) -> anyhow::Result<()> {
    let config = args.config().context("configuration")?;
    if args.process.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    let token = load_token(config.server.token_file.as_deref(), args.job_token.clone())?;
    let dataset =
        DatasetStore::open(&config.job.dataset, StoreConfig::default()).context("dataset store")?;
    let index = read_index(&dataset)
        .await
        .context("reading the dataset index")?;
    let plan = index.plan(config.job.seed).context("epoch plan")?;
    let ckpt = DatasetStore::open_durable(&config.job.checkpoint_root, StoreConfig::default())
        .context("checkpoint store")?;
    let storage = Storage {
        store: ckpt.inner().clone(),
        root: ckpt.root().clone(),
        url: config.job.checkpoint_root.clone(),
        local: ckpt.local_dir().map(Into::into),
    };
    let grpc = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .context("binding the gRPC address")?;
    let http = tokio::net::TcpListener::bind(config.server.metrics_listen)
        .await
        .context("binding the metrics address")?;
    let span = tracing::info_span!("coordinator", job = %config.job.id);
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    run(config, token, plan, storage, grpc, http, shutdown)
        .instrument(span)
        .await?;
    Ok(())
}
