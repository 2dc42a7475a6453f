//! The sample stream of one rank: its entries in groups of `mix` shards read together,
//! round-robin, each from its consumed prefix on.
//!
//! Inside a group the next sample always comes from the unfinished entry with the smallest
//! consumed prefix (ties: the earlier entry). That is plain round-robin, and it makes the position
//! of the stream a function of the per-entry prefixes alone: a stream rebuilt from a cursor
//! continues exactly where the original stood.

use std::collections::BTreeMap;

use crate::assignment::Assignment;
use crate::cursor::Cursor;
use crate::epoch::{Entry, EpochPlan};

/// Where a sample comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRef {
    /// Queue entry.
    pub entry: u64,
    /// Epoch.
    pub epoch: u64,
    /// Shard number.
    pub shard: u32,
    /// Position in the shard's read order (the entry's prefix before this sample).
    pub position: u64,
    /// Index of the sample in the shard (in tar order).
    pub sample: u32,
    /// Seed of the sample's own randomness (masking, crop).
    pub seed: u64,
}

/// The queue entries of one rank, in order (endless).
#[derive(Debug, Clone)]
pub struct RankEntries {
    carried: Vec<u64>,
    next_carried: usize,
    next_queue: u64,
    stride: u64,
}

impl RankEntries {
    /// The entries `assignment` gives `rank`.
    pub fn new(assignment: &Assignment, rank: u32) -> Self {
        let w = u64::from(assignment.world_size);
        let carried: Vec<u64> = assignment
            .carried
            .iter()
            .copied()
            .skip(rank as usize)
            .step_by(assignment.world_size as usize)
            .collect();
        let first = (u64::from(rank) + w - assignment.carried.len() as u64 % w) % w;
        Self {
            carried,
            next_carried: 0,
            next_queue: assignment.base + first,
            stride: w,
        }
    }
}

impl Iterator for RankEntries {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if let Some(&k) = self.carried.get(self.next_carried) {
            self.next_carried += 1;
            return Some(k);
        }
        let k = self.next_queue;
        self.next_queue += self.stride;
        Some(k)
    }
}

struct Open {
    entry: Entry,
    prefix: u64,
    order: Vec<u32>,
}

/// The endless sample stream of one rank.
pub struct RankStream {
    plan: EpochPlan,
    entries: RankEntries,
    mix: usize,
    group: Vec<Open>,
    cursor: Cursor,
    epoch_orders: BTreeMap<u64, Vec<u32>>,
    progress: BTreeMap<u64, u64>,
}

impl RankStream {
    /// The stream of `rank` under `assignment`, resuming from `cursor`, reading `mix` shards at a
    /// time.
    pub fn new(
        plan: &EpochPlan,
        assignment: &Assignment,
        rank: u32,
        mix: usize,
        cursor: &Cursor,
    ) -> Self {
        Self {
            plan: plan.clone(),
            entries: assignment.entries(rank),
            mix: mix.max(1),
            group: Vec::new(),
            cursor: cursor.clone(),
            epoch_orders: BTreeMap::new(),
            progress: BTreeMap::new(),
        }
    }

    /// The next `n` samples.
    pub fn take_samples(&mut self, n: usize) -> Vec<SampleRef> {
        (0..n).map(|_| self.next_sample()).collect()
    }

    /// Entries (with their consumed prefixes) whose prefix changed since the last call: the
    /// progress to report after a step.
    pub fn take_progress(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.progress).into_iter().collect()
    }

    /// The entries this stream will read next, current group first (for read-ahead).
    pub fn upcoming(&self, n: usize) -> Vec<Entry> {
        let open = self
            .group
            .iter()
            .filter(|o| o.prefix < o.entry.samples)
            .map(|o| o.entry);
        let later = self.entries.clone().map(|k| self.plan.entry(k));
        open.chain(later)
            .filter(|e| e.samples > 0)
            .take(n)
            .collect()
    }

    fn next_sample(&mut self) -> SampleRef {
        loop {
            let next = self
                .group
                .iter()
                .enumerate()
                .filter(|(_, o)| o.prefix < o.entry.samples)
                .min_by_key(|(i, o)| (o.prefix, *i))
                .map(|(i, _)| i);
            if let Some(i) = next {
                let open = &mut self.group[i];
                let position = open.prefix;
                let sample = open.order[position as usize];
                open.prefix += 1;
                self.progress.insert(open.entry.index, open.prefix);
                let e = open.entry;
                return SampleRef {
                    entry: e.index,
                    epoch: e.epoch,
                    shard: e.shard,
                    position,
                    sample,
                    seed: self.plan.sample_seed(e.epoch, e.shard, sample),
                };
            }
            self.open_next_group();
        }
    }

    fn open_next_group(&mut self) {
        let indices: Vec<u64> = (&mut self.entries).take(self.mix).collect();
        self.group = indices
            .into_iter()
            .map(|k| {
                let per = self.plan.shards_per_epoch();
                let epoch = k / per;
                if !self.epoch_orders.contains_key(&epoch) {
                    // Keep only a couple of epochs' orders around.
                    while self.epoch_orders.len() > 2 {
                        let first = *self.epoch_orders.keys().next().expect("non-empty");
                        self.epoch_orders.remove(&first);
                    }
                    self.epoch_orders
                        .insert(epoch, self.plan.epoch_order(epoch));
                }
                let entry = self.plan.entry_in(k, &self.epoch_orders[&epoch]);
                let prefix = self.cursor.consumed(&self.plan, k);
                let order = if prefix < entry.samples {
                    self.plan
                        .sample_order(entry.epoch, entry.shard, entry.samples)
                } else {
                    Vec::new()
                };
                Open {
                    entry,
                    prefix,
                    order,
                }
            })
            .collect();
    }
}
