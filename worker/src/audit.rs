//! The sample audit (`--audit-samples <file>`): one JSON line per trained step of this rank, with
//! the keys of its samples, written (and handed to the operating system) *before* the step's
//! progress is reported, so that no committed step can lack its record, whatever process is
//! killed when.
//!
//! A record counts once its step is committed by the generation that trained it: the commit log
//! says which steps each generation committed ([`committed`]). From the records of every rank and
//! the log, tests check that every sample of an epoch is in exactly one committed step.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One trained step of one rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Generation.
    pub generation: u64,
    /// The step the generation restored (0: a fresh start).
    pub from: u64,
    /// Rank.
    pub rank: u32,
    /// Step.
    pub step: u64,
    /// `epoch/shard/key` of every sample trained on in the step.
    pub samples: Vec<String>,
    /// `epoch/shard/#position` of the samples of quarantined shards this step consumed without
    /// training (their data is bad).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// The audit file of a worker.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Audit {
    /// Appends to `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
        }
    }

    /// Writes the record of a trained step (flushed to the operating system before returning).
    pub fn record(&mut self, record: &AuditRecord) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = self.file.as_mut().expect("opened above");
        let line = serde_json::to_string(record).expect("audit records serialise");
        file.write_all(format!("{line}\n").as_bytes())?;
        file.flush()
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

/// The records of committed steps: a step of generation `g` is committed when `g` committed a
/// checkpoint at or after it (`commits`: `(generation, step)` of every commit in the log) and it
/// is after the step `g` restored. A record cut short by a kill (the last line of a file) is
/// never in a committed step: its progress was never reported.
pub fn committed<'a>(records: &'a [AuditRecord], commits: &[(u64, u64)]) -> Vec<&'a AuditRecord> {
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for &(g, step) in commits {
        let s = last.entry(g).or_insert(0);
        *s = (*s).max(step);
    }
    records
        .iter()
        .filter(|r| r.step > r.from && last.get(&r.generation).is_some_and(|&s| r.step <= s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(generation: u64, from: u64, step: u64) -> AuditRecord {
        AuditRecord {
            generation,
            from,
            rank: 0,
            step,
            samples: vec![format!("0/0/{generation}-{step}")],
            skipped: Vec::new(),
        }
    }

    #[test]
    fn every_record_is_written_and_commits_decide_which_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut audit = Audit::new(&path);
        // Generation 1 trains steps 1..=5 and commits 3; generation 2 restores 3, trains 4..=6
        // and commits 6.
        for s in 1..=5 {
            audit.record(&rec(1, 0, s)).unwrap();
        }
        for s in 4..=6 {
            audit.record(&rec(2, 3, s)).unwrap();
        }
        let records = read_audit(&path).unwrap();
        assert_eq!(records.len(), 8, "every trained step is on disk");
        let kept: Vec<(u64, u64)> = committed(&records, &[(1, 3), (2, 6)])
            .iter()
            .map(|r| (r.generation, r.step))
            .collect();
        assert_eq!(kept, vec![(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]);
        assert!(committed(&records, &[]).is_empty());
    }
}
