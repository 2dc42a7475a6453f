//! The coordinator's configuration: a TOML file (`deploy/coordinator.toml` is the documented
//! template), then `FOURM_*` environment variables and command-line flags (see [`crate::cli`]),
//! each overriding the previous. Unknown keys are errors; every value is validated with an error
//! that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use fourm_process::ConfigError;
use fourm_process::{load_toml, parse_toml};
use serde::{Deserialize, Serialize};

use crate::state::StateConfig;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Network endpoints and security.
    #[serde(default)]
    pub server: ServerConfig,
    /// The training job.
    pub job: JobConfig,
    /// Workers and generations.
    #[serde(default)]
    pub membership: MembershipConfig,
}

/// Network endpoints and security.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// HTTP address of `/metrics` and `/status`: this host only unless set (they are not
    /// authenticated).
    pub metrics_listen: SocketAddr,
    /// Largest accepted gRPC message.
    pub max_message_size: bytesize::ByteSize,
    /// File holding the job token (the `FOURM_JOB_TOKEN` environment variable also works).
    pub token_file: Option<PathBuf>,
    /// TLS certificate (PEM); with `tls_key`, the server speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50051".parse().expect("valid address"),
            metrics_listen: "127.0.0.1:9090".parse().expect("valid address"),
            max_message_size: bytesize::ByteSize::mib(4),
            token_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Job identifier.
    pub id: String,
    /// Dataset URL (its `index.json` defines the shards).
    pub dataset: String,
    /// Object-store URL of the checkpoint folders.
    pub checkpoint_root: String,
    /// Seed of the epoch plan.
    #[serde(default)]
    pub seed: u64,
    /// Steps of the whole job.
    pub total_steps: u64,
    /// Checkpoint every this many steps (0: only on request and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Committed checkpoints to keep.
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    /// A job without progress (no commit, no step beyond the furthest reached) for this long
    /// fails with an error and a non-zero exit.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Generations formed after the first before the job fails.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_max_restarts() -> u32 {
    100
}

fn default_checkpoint_every() -> u64 {
    100
}

fn default_keep_last() -> usize {
    3
}

/// Workers and generations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// A generation forms once this many workers are present...
    pub min_workers: u32,
    /// ...waiting up to `join_timeout` for this many.
    pub max_workers: u32,
    /// How long to wait for more than `min_workers`.
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    /// Heartbeat period of the workers.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A worker silent this long is lost.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// A member whose step does not advance this long while its generation runs (a restore
    /// stuck on a store without timeouts, a blocked input pipeline) is evicted.
    #[serde(with = "humantime_serde")]
    pub progress_timeout: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            min_workers: 1,
            max_workers: 1,
            join_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(10),
            progress_timeout: Duration::from_secs(10 * 60),
        }
    }
}

impl CoordinatorConfig {
    /// Parses a TOML document (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        parse_toml(text, origin)
    }

    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_toml(path)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason| Err(ConfigError::invalid(key, reason));
        if self.job.id.is_empty() {
            return invalid("job.id", "must not be empty");
        }
        if self.job.dataset.is_empty() {
            return invalid("job.dataset", "must name the dataset URL");
        }
        if self.job.checkpoint_root.is_empty() {
            return invalid("job.checkpoint_root", "must name an object-store URL");
        }
        if self.job.total_steps == 0 {
            return invalid("job.total_steps", "must be at least 1");
        }
        if self.job.keep_last == 0 {
            return invalid("job.keep_last", "must be at least 1");
        }
        let m = &self.membership;
        if m.min_workers == 0 {
            return invalid("membership.min_workers", "must be at least 1");
        }
        if m.max_workers < m.min_workers {
            return invalid(
                "membership.max_workers",
                "must be at least membership.min_workers",
            );
        }
        if m.heartbeat_interval.is_zero() {
            return invalid("membership.heartbeat_interval", "must be positive");
        }
        if m.heartbeat_timeout <= m.heartbeat_interval {
            return invalid(
                "membership.heartbeat_timeout",
                "must be longer than membership.heartbeat_interval",
            );
        }
        if m.progress_timeout <= m.heartbeat_timeout {
            return invalid(
                "membership.progress_timeout",
                "must be longer than membership.heartbeat_timeout",
            );
        }
        if self.job.stall_timeout <= m.progress_timeout {
            return invalid(
                "job.stall_timeout",
                "must be longer than membership.progress_timeout",
            );
        }
        if self.server.max_message_size.as_u64() < 1024 {
            return invalid("server.max_message_size", "must be at least 1KiB");
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return invalid("server.tls_cert", "tls_cert and tls_key go together");
        }
        Ok(())
    }

    /// What the state machine needs.
    pub fn state_config(&self) -> StateConfig {
        StateConfig {
            job_id: self.job.id.clone(),
            min_workers: self.membership.min_workers,
            max_workers: self.membership.max_workers,
            join_timeout_ms: self.membership.join_timeout.as_millis() as u64,
            heartbeat_interval_ms: self.membership.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: self.membership.heartbeat_timeout.as_millis() as u64,
            checkpoint_every: self.job.checkpoint_every,
            keep_last: self.job.keep_last,
            total_steps: self.job.total_steps,
            stall_timeout_ms: self.job.stall_timeout.as_millis() as u64,
            max_restarts: self.job.max_restarts,
            progress_timeout_ms: self.membership.progress_timeout.as_millis() as u64,
        }
    }
}
