//! The exactly-once data cursor: for every queue entry (a shard in an epoch), how many samples of
//! its read order have been consumed by committed training steps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::epoch::EpochPlan;
use crate::error::PlanError;

/// Consumed prefixes of the queue entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Every entry below this index is fully consumed.
    done_below: u64,
    /// Consumed prefix of started entries at or above `done_below`.
    consumed: BTreeMap<u64, u64>,
}

impl Cursor {
    /// Nothing consumed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry below this queue index is fully consumed.
    pub fn done_below(&self) -> u64 {
        self.done_below
    }

    /// Samples of entry `index` consumed.
    pub fn consumed(&self, plan: &EpochPlan, index: u64) -> u64 {
        if index < self.done_below {
            plan.entry(index).samples
        } else {
            self.consumed.get(&index).copied().unwrap_or(0)
        }
    }

    /// Whether entry `index` is fully consumed.
    pub fn is_finished(&self, plan: &EpochPlan, index: u64) -> bool {
        index < self.done_below || self.consumed(plan, index) >= plan.entry(index).samples
    }

    /// The highest started (or finished) entry + 1: every entry at or above it is untouched.
    pub fn frontier(&self) -> u64 {
        self.consumed
            .keys()
            .next_back()
            .map_or(self.done_below, |k| k + 1)
            .max(self.done_below)
    }

    /// Started entries at or above `done_below` with their consumed prefix.
    pub fn started(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.consumed.iter().map(|(&k, &c)| (k, c))
    }

    /// Records that entry `index` has `consumed` samples consumed. Prefixes only grow; a report
    /// below the recorded prefix or past the shard's size is an error.
    pub fn record(&mut self, plan: &EpochPlan, index: u64, consumed: u64) -> Result<(), PlanError> {
        let entry = plan.entry(index);
        let bad = |reason: &str| PlanError::BadProgress {
            entry: index,
            epoch: entry.epoch,
            shard: entry.shard,
            consumed,
            reason: reason.to_string(),
        };
        if consumed > entry.samples {
            return Err(bad("past the end of the shard"));
        }
        let current = self.consumed(plan, index);
        if consumed < current {
            return Err(bad("below the consumed prefix already recorded"));
        }
        if index >= self.done_below && consumed > 0 {
            self.consumed.insert(index, consumed);
        }
        self.compact(plan);
        Ok(())
    }

    /// Merges another cursor (for example one worker's progress): per entry the larger prefix.
    pub fn merge(&mut self, plan: &EpochPlan, other: &Cursor) -> Result<(), PlanError> {
        let below = other.done_below.max(self.done_below);
        for k in self.done_below..below {
            self.consumed.insert(k, plan.entry(k).samples);
        }
        for (&k, &c) in &other.consumed {
            if c > self.consumed(plan, k) {
                self.record(plan, k, c)?;
            }
        }
        self.compact(plan);
        Ok(())
    }

    /// Samples consumed in `epoch`.
    pub fn consumed_in_epoch(&self, plan: &EpochPlan, epoch: u64) -> u64 {
        let per = plan.shards_per_epoch();
        (epoch * per..(epoch + 1) * per)
            .map(|k| self.consumed(plan, k))
            .sum()
    }

    fn compact(&mut self, plan: &EpochPlan) {
        loop {
            let k = self.done_below;
            let finished = self.consumed.get(&k).copied().unwrap_or(0) >= plan.entry(k).samples;
            if !finished {
                break;
            }
            self.consumed.remove(&k);
            self.done_below += 1;
        }
    }

    /// The serialisable form, with each started entry named by epoch and shard.
    pub fn to_state(&self, plan: &EpochPlan) -> CursorState {
        CursorState {
            seed: plan.seed(),
            done_below: self.done_below,
            started: self
                .consumed
                .iter()
                .map(|(&k, &consumed)| {
                    let e = plan.entry(k);
                    CursorEntry {
                        entry: k,
                        epoch: e.epoch,
                        shard: e.shard,
                        consumed,
                    }
                })
                .collect(),
        }
    }

    /// The cursor of a serialised form, checked against `plan`.
    pub fn from_state(plan: &EpochPlan, state: &CursorState) -> Result<Self, PlanError> {
        if state.seed != plan.seed() {
            return Err(PlanError::CursorMismatch(format!(
                "seed {} vs plan seed {}",
                state.seed,
                plan.seed()
            )));
        }
        let mut cursor = Cursor {
            done_below: state.done_below,
            consumed: BTreeMap::new(),
        };
        for e in &state.started {
            let planned = plan.entry(e.entry);
            if (planned.epoch, planned.shard) != (e.epoch, e.shard) {
                return Err(PlanError::CursorMismatch(format!(
                    "entry {} is epoch {} shard {} in the plan, epoch {} shard {} in the cursor",
                    e.entry, planned.epoch, planned.shard, e.epoch, e.shard
                )));
            }
            cursor.record(plan, e.entry, e.consumed)?;
        }
        Ok(cursor)
    }

    /// JSON form of [`Self::to_state`].
    pub fn to_json(&self, plan: &EpochPlan) -> String {
        serde_json::to_string_pretty(&self.to_state(plan)).expect("cursor serialises")
    }

    /// Parses the JSON form, checking it against `plan`.
    pub fn from_json(plan: &EpochPlan, json: &str) -> Result<Self, PlanError> {
        let state: CursorState =
            serde_json::from_str(json).map_err(|e| PlanError::CursorMismatch(e.to_string()))?;
        Self::from_state(plan, &state)
    }
}

/// A cursor as stored in a checkpoint manifest and sent to the workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorState {
    /// Seed of the epoch plan.
    pub seed: u64,
    /// Every entry below this one is fully consumed.
    pub done_below: u64,
    /// Partly consumed entries.
    pub started: Vec<CursorEntry>,
}

/// A partly consumed queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorEntry {
    /// Queue entry.
    pub entry: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its shard.
    pub shard: u32,
    /// Samples of its read order consumed.
    pub consumed: u64,
}
