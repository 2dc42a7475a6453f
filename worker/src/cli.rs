//! The worker's command line, shared by the `fourm-worker` binary and `fourm worker`: flags (each
//! overrides the configuration file and the `FOURM_*` environment), and training until the job
//! ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::config::{ConfigError, WorkerConfig};
use crate::control::Control;

/// A fourm training worker: one per GPU (or CPU host).
#[derive(Debug, Parser)]
#[command(name = "fourm-worker", version)]
pub struct Args {
    /// Configuration file (TOML; see deploy/worker.toml).
    #[arg(long, env = "FOURM_WORKER_CONFIG")]
    pub config: PathBuf,
    /// Coordinator endpoint, e.g. http://fourm-coordinator:50051 (`coordinator.address`).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// File holding the job token (`coordinator.token_file`; or set FOURM_JOB_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Worker id, unique in the job (`worker.id`; default: the host name).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Dataset URL (`data.dataset`).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Where the CPU collective listens (`worker.collective_listen`).
    #[arg(long)]
    pub collective_listen: Option<SocketAddr>,
    /// Address the other ranks reach the collective at (`worker.collective_advertise`).
    #[arg(long)]
    pub collective_advertise: Option<String>,
    /// Append the sample keys of every committed step to this file (`metrics.audit_samples`).
    #[arg(long)]
    pub audit_samples: Option<PathBuf>,
    /// Log as JSON lines (for Kubernetes) instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl Args {
    /// File, then environment, then flags; validated.
    pub fn config(&self) -> Result<WorkerConfig, ConfigError> {
        let mut c = WorkerConfig::load(&self.config)?;
        c.apply_env(|k| std::env::var(k).ok())?;
        if let Some(v) = &self.coordinator {
            c.coordinator.address.clone_from(v);
        }
        if self.token_file.is_some() {
            c.coordinator.token_file.clone_from(&self.token_file);
        }
        if self.worker_id.is_some() {
            c.worker.id.clone_from(&self.worker_id);
        }
        if let Some(v) = &self.dataset {
            c.data.dataset.clone_from(v);
        }
        if let Some(v) = self.collective_listen {
            c.worker.collective_listen = v;
        }
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
        interrupted().await;
        tracing::info!("interrupted: leaving the job");
        on_signal.shut_down();
    });
    crate::run(config, token.trim().to_string(), control, join).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (what Kubernetes and `fourm launch` send).
async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
