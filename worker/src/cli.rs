//! The worker's command line, shared by the `fourm-worker` binary and `fourm worker`: flags and
//! their `FOURM_*` variables over the configuration file, and training until the job ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use fourm_process::{ProcessFlags, overlay, shutdown_signal};

use crate::config::{ConfigError, WorkerConfig};
use crate::control::Control;

/// A fourm training worker: one per GPU (or CPU host).
///
/// Every setting comes from the configuration file, then its `FOURM_*` environment variable, then
/// its flag, each overriding the previous.
#[derive(Debug, Parser)]
#[command(name = "fourm-worker", version)]
pub struct Args {
    /// Configuration file (TOML; see deploy/worker.toml).
    #[arg(long, env = "FOURM_WORKER_CONFIG")]
    pub config: PathBuf,
    /// Coordinator endpoint, e.g. http://fourm-coordinator:50051 (`coordinator.address`).
    #[arg(long, env = "FOURM_COORDINATOR")]
    pub coordinator: Option<String>,
    /// File holding the job token (`coordinator.token_file`).
    #[arg(long, env = "FOURM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The job token itself, from the environment only (a Kubernetes Secret).
    #[arg(long, env = "FOURM_JOB_TOKEN", hide = true, hide_env_values = true)]
    pub job_token: Option<String>,
    /// Worker id, unique in the job (`worker.id`; default: the host name).
    #[arg(long, env = "FOURM_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Dataset URL (`data.dataset`).
    #[arg(long, env = "FOURM_DATASET")]
    pub dataset: Option<String>,
    /// Where the CPU collective listens (`worker.collective_listen`).
    #[arg(long, env = "FOURM_COLLECTIVE_LISTEN")]
    pub collective_listen: Option<SocketAddr>,
    /// Address the other ranks reach the collective at (`worker.collective_advertise`).
    #[arg(long, env = "FOURM_COLLECTIVE_ADVERTISE")]
    pub collective_advertise: Option<String>,
    /// Append the sample keys of every committed step to this file (`metrics.audit_samples`).
    #[arg(long, env = "FOURM_AUDIT_SAMPLES")]
    pub audit_samples: Option<PathBuf>,
    /// Logging and configuration checks.
    #[command(flatten)]
    pub process: ProcessFlags,
}

impl Args {
    /// File, then environment and flags; validated.
    pub fn config(&self) -> Result<WorkerConfig, ConfigError> {
        let mut c = WorkerConfig::load(&self.config)?;
        overlay(&mut c.coordinator.address, self.coordinator.clone());
        if self.token_file.is_some() {
            c.coordinator.token_file.clone_from(&self.token_file);
        }
        if self.worker_id.is_some() {
            c.worker.id.clone_from(&self.worker_id);
        }
        overlay(&mut c.data.dataset, self.dataset.clone());
        overlay(&mut c.worker.collective_listen, self.collective_listen);
        if self.collective_advertise.is_some() {
            c.worker
                .collective_advertise
                .clone_from(&self.collective_advertise);
        }
        if self.audit_samples.is_some() {
            c.metrics.audit_samples.clone_from(&self.audit_samples);
        }
        c.validate()?;
        Ok(c)
    }
}

/// Trains until the job ends or SIGINT/SIGTERM (logging must be set up).
pub async fn main(args: Args) -> anyhow::Result<()> {
    let config = args.config().context("configuration")?;
    if args.process.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    let token = match &config.coordinator.token_file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => args
            .job_token
            .clone()
            .context("no job token: set coordinator.token_file or FOURM_JOB_TOKEN")?,
    };
    let (control, join) = Control::new();
    let control = Arc::new(control);
    let on_signal = control.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("interrupted: leaving the job");
        on_signal.shut_down();
    });
    crate::run(config, token.trim().to_string(), control, join).await?;
    Ok(())
}
