//! Checkpoint files (architecture §5). Rank 0 writes `model.safetensors` (ml-4m names, loadable
//! by ml-4m) and `trainer.json` (step, schedule, seeds, configuration, world size); the AdamW
//! moments go to `optimizer.safetensors` (rank 0), or with the state sharded to one file per rank
//! ([`optimizer`]); the coordinator writes `MANIFEST.json` last. Saving only stalls training for
//! the copy to host memory: the upload runs in the background. Restoring reads a folder only if
//! its manifest exists and lists the files with their sizes and hashes.

mod optimizer;
mod restore;
mod snapshot;

use fourm_model::optim::{AdamWConfig, CosineSchedule};
use serde::{Deserialize, Serialize};

pub use optimizer::{Assembler, OPTIMIZER_FILE, OptimizerPart, is_optimizer_file, optimizer_file};
pub use restore::{Restored, restore};
pub use snapshot::{Snapshot, UploadOptions, snapshot, upload_file};

/// The weights, as ml-4m names them.
pub const MODEL_FILE: &str = "model.safetensors";
/// Step, schedule, seeds, configuration.
pub const TRAINER_FILE: &str = "trainer.json";
const MANIFEST_FILE: &str = "MANIFEST.json";

/// A checkpoint problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The store failed.
    #[error("object store error on {path}: {source}")]
    Store {
        /// The object.
        path: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
    /// The folder has no manifest: it was never committed.
    #[error("{folder} has no MANIFEST.json: the checkpoint was never committed")]
    NotCommitted {
        /// The folder.
        folder: String,
    },
    /// A file does not match the manifest or cannot be decoded.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl CheckpointError {
    /// The checkpoint folder (`step-…`) the error concerns, where it names one.
    pub fn folder(&self) -> Option<&str> {
        let path = match self {
            Self::Store { path, .. } | Self::Corrupt { path, .. } => path,
            Self::NotCommitted { folder } => folder,
        };
        path.split('/').find(|part| part.starts_with("step-"))
    }
}

/// `trainer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Format version.
    pub format: u32,
    /// Last completed step.
    pub step: u64,
    /// Generation that wrote it.
    pub generation: u64,
    /// Ranks of that generation.
    pub world_size: u32,
    /// Learning-rate schedule.
    pub schedule: CosineSchedule,
    /// AdamW hyper-parameters.
    pub adamw: AdamWConfig,
    /// Seed of the initial weights.
    pub init_seed: u64,
    /// Digest of the shared configuration.
    pub config_digest: String,
    /// The worker configuration (for humans and tools).
    pub config: serde_json::Value,
}

/// One written file: name, size, SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Name in the folder.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}
