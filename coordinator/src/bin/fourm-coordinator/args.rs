//! Command-line flags of `fourm-coordinator`; each overrides the configuration file and the
//! `FOURM_*` environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use fourm_coordinator::config::{ConfigError, CoordinatorConfig};

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
