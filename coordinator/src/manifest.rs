//! `MANIFEST.json`: what a checkpoint folder holds. Written by the coordinator once every rank has
//! written its part and every file is verified; the checkpoint exists once the commit log records
//! it (see [`crate::durable`]).

use fourm_plan::{Assignment, CursorState};
use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 2;
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
    /// Incarnation of the coordinator that committed it.
    pub incarnation: u32,
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
    /// Shards found bad so far: their samples count as consumed, without training.
    #[serde(default)]
    pub quarantined: Vec<Quarantined>,
    /// Commit time, Unix milliseconds.
    pub committed_unix_ms: u64,
}

/// A shard taken out of training because its data is bad (not because a read failed: those are
/// retried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantined {
    /// Epoch it was met in.
    pub epoch: u64,
    /// Shard number.
    pub shard: u32,
    /// Samples skipped.
    pub samples: u64,
    /// Why (the reader's error).
    pub reason: String,
}

/// Folder name of the checkpoint of `step` written by `generation`: unique per generation, so
/// that a rank of an ended generation never writes into the folder of a live one.
pub fn folder_name(step: u64, generation: u64) -> String {
    format!("step-{step:09}-g{generation:016x}")
}

/// The step of a folder name, if it is one.
pub fn folder_step(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("step-")?;
    let (step, generation) = rest.split_once("-g")?;
    u64::from_str_radix(generation, 16).ok()?;
    step.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_carry_step_and_generation() {
        let name = folder_name(120, (3 << 48) | 7);
        assert_eq!(name, "step-000000120-g0003000000000007");
        assert_eq!(folder_step(&name), Some(120));
        assert_eq!(folder_step("step-000000120"), None);
        assert_eq!(folder_step("log"), None);
    }
}
