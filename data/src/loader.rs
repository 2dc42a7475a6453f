//! The worker's view of the data: the decoded samples of each step, in stream order, with whole
//! shards read ahead in the background.
//!
//! After each step the loader looks at the stream's upcoming entries and keeps the shards they
//! name loading or loaded, at most `shards_in_flight` of them (more only when one step itself
//! spans more shards); any other shard is dropped, so memory stays bounded by that many shards.
//! A shard that fails to read or validate yields, for each of its samples, the shard's error:
//! the stream goes on and the caller decides to quarantine it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::error::DataError;
use crate::reader::ShardReader;
use crate::shard::{DecodedSample, ShardData};
use fourm_plan::{RankStream, SampleRef};

/// Read-ahead settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Shards loading or loaded at once.
    pub shards_in_flight: usize,
    /// How long a shard whose read fails for a transient reason (the store, not the data) is
    /// read again before the failure is returned (every read already retries on its own).
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            shards_in_flight: 4,
            retry_for: Duration::from_secs(60),
        }
    }
}

impl LoaderConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.shards_in_flight == 0 {
            return Err(DataError::Config {
                key: "shards_in_flight",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// A sample of a step: where it comes from and its data, or its shard's error.
#[derive(Debug, Clone)]
pub struct StepSample {
    /// Position in the plan.
    pub at: SampleRef,
    /// The decoded sample, or why its shard is bad.
    pub data: Result<DecodedSample, Arc<DataError>>,
}

/// The samples of one step.
#[derive(Debug, Clone)]
pub struct Step {
    /// In stream order.
    pub samples: Vec<StepSample>,
    /// Time spent waiting for shards to arrive.
    pub waited: Duration,
}

impl Step {
    /// The bad shards of this step (each once) with their error.
    pub fn bad_shards(&self) -> Vec<(u32, Arc<DataError>)> {
        let mut out: Vec<(u32, Arc<DataError>)> = Vec::new();
        for s in &self.samples {
            if let Err(e) = &s.data
                && !out.iter().any(|(shard, _)| *shard == s.at.shard)
            {
                out.push((s.at.shard, e.clone()));
            }
        }
        out
    }
}

type Loaded = Result<Arc<ShardData>, Arc<DataError>>;

enum Slot {
    Loading(JoinHandle<Result<ShardData, DataError>>),
    Ready(Loaded),
}

/// Produces the decoded samples of a rank's steps.
pub struct StepLoader {
    reader: Arc<ShardReader>,
    config: LoaderConfig,
    runtime: Handle,
    slots: HashMap<u32, Slot>,
}

impl StepLoader {
    /// A loader reading through `reader`, running its background reads on `runtime`.
    pub fn new(
        reader: ShardReader,
        config: LoaderConfig,
        runtime: Handle,
    ) -> Result<Self, DataError> {
        config.validate()?;
        Ok(Self {
            reader: Arc::new(reader),
            config,
            runtime,
            slots: HashMap::new(),
        })
    }

    /// Shards loading or loaded now.
    pub fn resident(&self) -> usize {
        self.slots.len()
    }

    /// The number of samples the index records for `shard`.
    pub fn shard_samples(&self, shard: u32) -> u64 {
        self.reader.index().shard(shard).map_or(0, |s| s.samples)
    }

    /// Starts reading the shards `stream` will need next (call once before the first step to get
    /// a head start; [`StepLoader::next_step`] does it after every step).
    pub fn prefetch(&mut self, stream: &RankStream) {
        self.keep(&[], stream);
    }

    /// Takes the next `batch` samples of `stream` and decodes them, waiting for their shards.
    pub async fn next_step(&mut self, stream: &mut RankStream, batch: usize) -> Step {
        let refs = stream.take_samples(batch);
        let mut needed: Vec<u32> = Vec::new();
        for r in &refs {
            if !needed.contains(&r.shard) {
                needed.push(r.shard);
            }
        }
        self.keep(&needed, stream);
        let start = Instant::now();
        let mut ready: HashMap<u32, Loaded> = HashMap::new();
        for &shard in &needed {
            ready.insert(shard, self.wait(shard).await);
        }
        let waited = start.elapsed();
        let samples = refs
            .into_iter()
            .map(|at| {
                let data = match &ready[&at.shard] {
                    Ok(shard) => shard
                        .decode(at.sample as usize, at.seed)
                        .ok_or_else(|| Arc::new(self.past_end(&at, shard.len()))),
                    Err(e) => Err(e.clone()),
                };
                StepSample { at, data }
            })
            .collect();
        Step { samples, waited }
    }

    /// [`StepLoader::next_step`] for a caller outside the runtime (a plain training thread).
    /// Panics if called from inside an async context.
    pub fn next_step_blocking(&mut self, stream: &mut RankStream, batch: usize) -> Step {
        let runtime = self.runtime.clone();
        runtime.block_on(self.next_step(stream, batch))
    }

    /// Keeps `needed` plus the upcoming shards (up to the bound) and drops the rest.
    fn keep(&mut self, needed: &[u32], stream: &RankStream) {
        let limit = self.config.shards_in_flight.max(needed.len());
        let mut wanted: Vec<u32> = needed.to_vec();
        // Upcoming entries beyond `limit` can only name shards already counted.
        for entry in stream.upcoming(limit) {
            if wanted.len() >= limit {
                break;
            }
            if !wanted.contains(&entry.shard) {
                wanted.push(entry.shard);
            }
        }
        self.slots.retain(|shard, slot| {
            let keep = wanted.contains(shard);
            if !keep && let Slot::Loading(task) = slot {
                task.abort();
            }
            keep
        });
        for shard in wanted {
            if !self.slots.contains_key(&shard) {
                let reader = self.reader.clone();
                let task = self
                    .runtime
                    .spawn(async move { reader.read_shard(shard).await });
                self.slots.insert(shard, Slot::Loading(task));
            }
        }
    }

    async fn wait(&mut self, shard: u32) -> Loaded {
        let deadline = Instant::now() + self.config.retry_for;
        let slot = self.slots.get_mut(&shard).expect("needed shards are kept");
        while let Slot::Loading(task) = slot {
            let loaded = match task.await {
                Ok(Ok(data)) => Ok(Arc::new(data)),
                Ok(Err(e)) => Err(Arc::new(e)),
                Err(source) => Err(Arc::new(DataError::Task { shard, source })),
            };
            match &loaded {
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    warn!(shard, error = %e, "shard read failed; reading it again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let reader = self.reader.clone();
                    let retry = self
                        .runtime
                        .spawn(async move { reader.read_shard(shard).await });
                    *slot = Slot::Loading(retry);
                    continue;
                }
                Err(e) if e.is_transient() => warn!(shard, error = %e, "shard unreadable"),
                Err(e) => warn!(shard, error = %e, "bad shard"),
                Ok(_) => {}
            }
            *slot = Slot::Ready(loaded);
        }
        match slot {
            Slot::Ready(loaded) => loaded.clone(),
            Slot::Loading(_) => unreachable!("just resolved"),
        }
    }

    fn past_end(&self, at: &SampleRef, len: usize) -> DataError {
        let index = self.reader.index();
        let expected = index.shard(at.shard).map_or(0, |s| s.samples);
        DataError::SampleCount {
            url: format!("{}/shard-{:05}", self.reader.store().url(), at.shard),
            expected,
            found: len as u64,
        }
    }
}
