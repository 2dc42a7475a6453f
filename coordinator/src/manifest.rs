//! `MANIFEST.json`: what makes a checkpoint folder exist. Written last, by the coordinator, once
//! every rank has written its part; a folder without it is never restored and is removed.

use fourm_plan::{Assignment, CursorState};
use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;
/// File name of the manifest inside a checkpoint folder.
pub const MANIFEST_NAME: &str = "MANIFEST.json";

/// A file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Name inside the folder.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The committed state of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The job.
    pub job_id: String,
    /// Training step after which the checkpoint was taken.
    pub step: u64,
    /// Generation that wrote it.
    pub generation: u64,
    /// Ranks of that generation.
    pub world_size: u32,
    /// Folder name (`step-000000100`) under the checkpoint root.
    pub folder: String,
    /// Files written by the ranks.
    pub files: Vec<ManifestFile>,
    /// The data cursor after the step.
    pub cursor: CursorState,
    /// The rank assignment in force.
    pub assignment: Assignment,
    /// Commit time, Unix milliseconds.
    pub committed_unix_ms: u64,
}

/// Folder name of the checkpoint of `step`.
pub fn folder_name(step: u64) -> String {
    format!("step-{step:09}")
}

/// The step of a folder name, if it is one.
pub fn folder_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}
