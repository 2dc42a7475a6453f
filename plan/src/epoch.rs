//! The epoch plan: which shard comes when, and in which order its samples are read.
//!
//! Epochs are laid end to end into one global *queue* of entries: entry `k` is shard
//! `order_e[k mod S]` of epoch `e = k / S`, where `order_e` is a permutation of the `S` shards
//! seeded by `(seed, e)`. Inside a shard, samples are read in a permutation seeded by
//! `(seed, e, shard)`; the masking of a sample is seeded by `(seed, e, shard, sample)`. None of this
//! depends on how many workers read the data.

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::seed::{derive_seed, permutation};

/// A shard of the dataset as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSize {
    /// Shard number (`shard-NNNNN`).
    pub shard: u32,
    /// Samples in the shard.
    pub samples: u64,
}

/// One entry of the global queue: a shard in a given epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Queue index.
    pub index: u64,
    /// Epoch.
    pub epoch: u64,
    /// Shard number.
    pub shard: u32,
    /// Samples in the shard.
    pub samples: u64,
}

/// The plan of a dataset for a seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochPlan {
    seed: u64,
    shards: Vec<ShardSize>,
}

impl EpochPlan {
    /// A plan over `shards` (any order; kept sorted by shard number).
    pub fn new(seed: u64, mut shards: Vec<ShardSize>) -> Result<Self, PlanError> {
        shards.sort_by_key(|s| s.shard);
        if shards.is_empty() {
            return Err(PlanError::Empty);
        }
        if let Some(w) = shards.windows(2).find(|w| w[0].shard == w[1].shard) {
            return Err(PlanError::DuplicateShard(w[0].shard));
        }
        if shards.iter().all(|s| s.samples == 0) {
            return Err(PlanError::Empty);
        }
        Ok(Self { seed, shards })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The shards, sorted by number.
    pub fn shards(&self) -> &[ShardSize] {
        &self.shards
    }

    /// Entries per epoch.
    pub fn shards_per_epoch(&self) -> u64 {
        self.shards.len() as u64
    }

    /// Samples per epoch.
    pub fn samples_per_epoch(&self) -> u64 {
        self.shards.iter().map(|s| s.samples).sum()
    }

    /// Shard order of an epoch (indices into [`EpochPlan::shards`]).
    pub fn epoch_order(&self, epoch: u64) -> Vec<u32> {
        permutation(self.shards.len(), &[self.seed, epoch])
    }

    /// Queue entry `index`.
    pub fn entry(&self, index: u64) -> Entry {
        let per = self.shards_per_epoch();
        let epoch = index / per;
        self.entry_in(index, &self.epoch_order(epoch))
    }

    /// Queue entry `index` given its epoch's order (avoids recomputing the permutation).
    pub fn entry_in(&self, index: u64, order: &[u32]) -> Entry {
        let per = self.shards_per_epoch();
        let shard = self.shards[order[(index % per) as usize] as usize];
        Entry {
            index,
            epoch: index / per,
            shard: shard.shard,
            samples: shard.samples,
        }
    }

    /// Order in which the samples of `shard` are read in `epoch` (sample indices in the shard).
    pub fn sample_order(&self, epoch: u64, shard: u32, samples: u64) -> Vec<u32> {
        permutation(samples as usize, &[self.seed, epoch, u64::from(shard)])
    }

    /// Seed of the per-sample randomness (masking, crop choice) of sample `sample` of `shard`.
    pub fn sample_seed(&self, epoch: u64, shard: u32, sample: u32) -> u64 {
        derive_seed(&[self.seed, epoch, u64::from(shard), u64::from(sample)])
    }
}
