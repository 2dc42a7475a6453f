//! A running generation: its members, the data they started from, the progress they reported
//! and the checkpoints they are writing.

use std::collections::{BTreeMap, BTreeSet};

use fourm_plan::{Assignment, Cursor, EpochPlan, PlanError};

use crate::manifest::ManifestFile;

/// A committed checkpoint the generation started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    /// Its step.
    pub step: u64,
    /// Its folder name.
    pub folder: String,
}

/// A checkpoint being written.
#[derive(Debug, Clone, Default)]
pub struct PendingCheckpoint {
    /// Rank 0 announced it (and was told where to write).
    pub begun: bool,
    /// Ranks that acknowledged.
    pub acks: BTreeSet<u32>,
    /// Files the ranks wrote.
    pub files: Vec<ManifestFile>,
    /// Every rank acknowledged: the manifest is being written.
    pub committing: bool,
}

/// One reported progress record.
#[derive(Debug, Clone, Copy)]
struct Report {
    step: u64,
    entry: u64,
    consumed: u64,
}

/// A generation of workers training together.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Id (incarnation in the high 32 bits).
    pub id: u64,
    /// Worker ids in rank order.
    pub members: Vec<String>,
    /// Rank assignment of the data.
    pub assignment: Assignment,
    /// Checkpoint the generation restores (None: fresh start).
    pub restore: Option<RestorePoint>,
    /// Rank 0's NCCL unique id, once published.
    pub nccl_id: Option<Vec<u8>>,
    /// Data cursor the generation started from.
    pub start: Cursor,
    /// Cursor at the last checkpoint committed in this generation (or `start`).
    base: Cursor,
    /// Progress reported since `base`.
    reports: Vec<Report>,
    /// Cursor including every report (uncommitted).
    pub working: Cursor,
    /// Highest step each rank reported progress for.
    pub reported_step: Vec<u64>,
    /// Checkpoints in progress, by step.
    pub pending: BTreeMap<u64, PendingCheckpoint>,
}

impl Generation {
    /// A generation starting from `start`.
    pub fn new(
        id: u64,
        members: Vec<String>,
        assignment: Assignment,
        restore: Option<RestorePoint>,
        start: Cursor,
    ) -> Self {
        let ranks = members.len();
        Self {
            id,
            members,
            assignment,
            restore,
            nccl_id: None,
            base: start.clone(),
            working: start.clone(),
            start,
            reports: Vec::new(),
            reported_step: vec![0; ranks],
            pending: BTreeMap::new(),
        }
    }

    /// Rank of a worker, if a member.
    pub fn rank_of(&self, worker: &str) -> Option<u32> {
        self.members
            .iter()
            .position(|m| m == worker)
            .map(|r| r as u32)
    }

    /// Ranks.
    pub fn world_size(&self) -> u32 {
        self.members.len() as u32
    }

    /// Records the progress of `rank` after `step`. Entries must belong to the rank and prefixes
    /// only grow.
    pub fn record_progress(
        &mut self,
        plan: &EpochPlan,
        rank: u32,
        step: u64,
        entries: &[(u64, u64)],
    ) -> Result<(), String> {
        if step < self.reported_step[rank as usize] {
            return Err(format!(
                "step {step} is before step {} already reported",
                self.reported_step[rank as usize]
            ));
        }
        for &(entry, consumed) in entries {
            match self.assignment.owner(entry) {
                Some(owner) if owner == rank => {}
                owner => {
                    return Err(format!(
                        "entry {entry} belongs to rank {owner:?}, not rank {rank}"
                    ));
                }
            }
            self.working
                .record(plan, entry, consumed)
                .map_err(|e: PlanError| e.to_string())?;
            self.reports.push(Report {
                step,
                entry,
                consumed,
            });
        }
        self.reported_step[rank as usize] = step;
        Ok(())
    }

    /// The cursor after `step`: the last committed one plus every report up to `step`.
    pub fn cursor_at(&self, plan: &EpochPlan, step: u64) -> Result<Cursor, PlanError> {
        let mut latest: BTreeMap<u64, u64> = BTreeMap::new();
        for r in self.reports.iter().filter(|r| r.step <= step) {
            let c = latest.entry(r.entry).or_insert(0);
            *c = (*c).max(r.consumed);
        }
        let mut cursor = self.base.clone();
        for (entry, consumed) in latest {
            if consumed > cursor.consumed(plan, entry) {
                cursor.record(plan, entry, consumed)?;
            }
        }
        Ok(cursor)
    }

    /// A checkpoint at `step` with `cursor` is committed: later checkpoints build on it.
    pub fn committed(&mut self, step: u64, cursor: Cursor) {
        self.base = cursor;
        self.reports.retain(|r| r.step > step);
        self.pending.retain(|&s, _| s > step);
    }

    /// Shard entries currently being read (started, unfinished).
    pub fn open_entries(&self, plan: &EpochPlan) -> usize {
        self.working
            .started()
            .filter(|&(k, c)| c < plan.entry(k).samples)
            .count()
    }
}
