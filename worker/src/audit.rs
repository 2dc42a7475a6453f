//! The sample audit (`--audit-samples <file>`): the keys of the samples of every *committed* step,
//! one JSON line per step, so that tests can check that every sample of an epoch was trained on
//! exactly once. Steps are held back until a checkpoint at or after them is committed; a
//! generation that ends drops its uncommitted steps, as training does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One committed step of one rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Generation.
    pub generation: u64,
    /// Rank.
    pub rank: u32,
    /// Step.
    pub step: u64,
    /// `epoch/shard/key` of every sample trained on in the step (quarantined ones excluded).
    pub samples: Vec<String>,
}

/// Pending and written records.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    pending: BTreeMap<u64, AuditRecord>,
}

impl Audit {
    /// Appends to `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            pending: BTreeMap::new(),
        }
    }

    /// A step was trained (not yet committed).
    pub fn record(&mut self, record: AuditRecord) {
        self.pending.insert(record.step, record);
    }

    /// A checkpoint at `step` is committed: writes every pending step up to it.
    pub fn committed(&mut self, step: u64) -> std::io::Result<()> {
        let later = self.pending.split_off(&(step + 1));
        let done = std::mem::replace(&mut self.pending, later);
        if done.is_empty() {
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        for record in done.values() {
            writeln!(
                file,
                "{}",
                serde_json::to_string(record).expect("serialises")
            )?;
        }
        file.sync_data()
    }

    /// The generation ended: its uncommitted steps never happened.
    pub fn discard_uncommitted(&mut self) {
        self.pending.clear();
    }
}

/// Reads an audit file.
pub fn read_audit(path: &Path) -> std::io::Result<Vec<AuditRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64) -> AuditRecord {
        AuditRecord {
            generation: 1,
            rank: 0,
            step,
            samples: vec![format!("0/0/{step}")],
        }
    }

    #[test]
    fn only_committed_steps_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut audit = Audit::new(&path);
        for s in 1..=5 {
            audit.record(rec(s));
        }
        audit.committed(3).unwrap();
        audit.discard_uncommitted();
        audit.record(rec(4));
        audit.committed(4).unwrap();
        let steps: Vec<u64> = read_audit(&path).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
    }
}
