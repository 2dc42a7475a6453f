//! Which rank reads which queue entries.
//!
//! Entries are dealt round-robin: the unfinished entries carried over from before the last change
//! of world size first (in queue order), then the queue from `base` on. While the world size does
//! not change the assignment does not change, so a run resumed from a checkpoint reads exactly
//! what the uninterrupted run would have read; when it changes, everything unfinished is dealt
//! anew over the new ranks. Either way every entry belongs to exactly one rank.

use serde::{Deserialize, Serialize};

use crate::cursor::Cursor;
use crate::epoch::EpochPlan;
use crate::error::PlanError;
use crate::stream::RankEntries;

/// The entries of each rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Ranks.
    pub world_size: u32,
    /// Unfinished entries carried over at the last re-plan, in queue order.
    pub carried: Vec<u64>,
    /// First queue entry dealt after the carried ones.
    pub base: u64,
}

impl Assignment {
    /// A fresh assignment: entry `k` goes to rank `k mod world_size`.
    pub fn new(world_size: u32) -> Result<Self, PlanError> {
        if world_size == 0 {
            return Err(PlanError::NoWorkers);
        }
        Ok(Self {
            world_size,
            carried: Vec::new(),
            base: 0,
        })
    }

    /// The entries of `rank`, in order (an endless sequence).
    pub fn entries(&self, rank: u32) -> RankEntries {
        RankEntries::new(self, rank)
    }

    /// The rank that reads entry `index` (`None` for entries finished before the last re-plan).
    pub fn owner(&self, index: u64) -> Option<u32> {
        let w = u64::from(self.world_size);
        if let Some(i) = self.carried.iter().position(|&k| k == index) {
            return Some((i as u64 % w) as u32);
        }
        (index >= self.base).then(|| ((index - self.base + self.carried.len() as u64) % w) as u32)
    }

    /// The assignment to use from `cursor` on with `world_size` ranks: unchanged if the world
    /// size is the same, otherwise every unfinished entry dealt anew.
    pub fn replan(
        &self,
        plan: &EpochPlan,
        cursor: &Cursor,
        world_size: u32,
    ) -> Result<Self, PlanError> {
        if world_size == 0 {
            return Err(PlanError::NoWorkers);
        }
        if world_size == self.world_size {
            return Ok(self.clone());
        }
        let frontier = cursor.frontier().max(self.base);
        let mut carried: Vec<u64> = self
            .carried
            .iter()
            .copied()
            .chain(cursor.done_below().max(self.base)..frontier)
            .filter(|&k| !cursor.is_finished(plan, k))
            .collect();
        carried.sort_unstable();
        carried.dedup();
        Ok(Self {
            world_size,
            carried,
            base: frontier,
        })
    }
}
