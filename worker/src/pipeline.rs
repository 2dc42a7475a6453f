//! The input pipeline of a rank: its `RankStream` → decoded samples (whole shards read ahead in
//! the background by fourm-data's `StepLoader`) → text tokenized → ml-4m masking seeded per
//! sample → a `fourm_model::Batch`. A dedicated thread prepares batches ahead of the training
//! step (bounded), so that the step never waits while the store keeps up; the time it does wait
//! is measured.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use fourm_data::{DecodedSample, StepLoader};
use fourm_masking::{MaskedBatch, MaskedTensor, Masker, TextTokenizer, masking_input};
use fourm_model::{Batch, ModalityBatch, ModalityData};
use fourm_plan::RankStream;

/// A batch ready for the step, with what it consumed.
#[derive(Debug)]
pub struct PreparedBatch {
    /// The model input.
    pub batch: Batch,
    /// Consumed prefixes of the entries this batch read from (the progress to report).
    pub progress: Vec<(u64, u64)>,
    /// `epoch/shard/key` of every sample in the batch.
    pub keys: Vec<String>,
    /// `epoch/shard/#position` of the samples of bad shards consumed without training.
    pub skipped: Vec<String>,
    /// Shards found bad while filling the batch (their samples are skipped, and counted).
    pub quarantined: Vec<Quarantine>,
    /// Time the loader waited for shards while preparing it.
    pub loader_wait: Duration,
}

/// A shard taken out of training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// Epoch.
    pub epoch: u64,
    /// Shard.
    pub shard: u32,
    /// Its samples (all skipped).
    pub samples: u64,
    /// Why.
    pub reason: String,
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A shard could not be read (after the store's retries and the loader's): the data may be
    /// fine, so nothing is consumed; the generation ends and reads it again later.
    #[error("shard {shard} unreadable for now: {reason}")]
    Unavailable {
        /// The shard.
        shard: u32,
        /// The last error.
        reason: String,
    },
    /// The generation was aborted while the step waited for its batch.
    #[error("aborted while waiting for data: {0}")]
    Aborted(String),
    /// A sample could not be tokenized or masked.
    #[error("sample {key}: {reason}")]
    Sample {
        /// `epoch/shard/key`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Every shard read in a row was bad: the data is unusable.
    #[error("no valid sample in {0} consecutive samples: every shard read is bad")]
    NoValidData(usize),
}

/// Turns decoded samples into masked model batches.
pub struct BatchBuilder {
    /// Masking (ml-4m's UnifiedMasking).
    pub masker: Masker,
    /// Text tokenizer for text modalities.
    pub tokenizer: Option<TextTokenizer>,
}

impl BatchBuilder {
    /// The masked model input of `samples` (each with its per-sample seed).
    pub fn build(&self, samples: &[(String, u64, &DecodedSample)]) -> Result<Batch, PipelineError> {
        let masked = samples
            .iter()
            .map(|(key, seed, sample)| {
                let bad = |e: fourm_masking::MaskError| PipelineError::Sample {
                    key: key.clone(),
                    reason: e.to_string(),
                };
                let inputs = masking_input(sample, self.masker.config(), self.tokenizer.as_ref())
                    .map_err(bad)?;
                self.masker.mask(&inputs, *seed).map_err(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stacked = MaskedBatch::collate(&masked).ok_or_else(|| PipelineError::Sample {
            key: "*".into(),
            reason: "masked samples differ in layout".into(),
        })?;
        Ok(to_model_batch(stacked))
    }
}

/// Converts fourm-data's stacked masked rows into the model's batch.
fn to_model_batch(m: MaskedBatch) -> Batch {
    let modalities = m
        .modalities
        .into_iter()
        .map(|(name, rows)| {
            let data = match rows.tensor {
                MaskedTensor::Tokens(t) => ModalityData::Tokens(t),
                MaskedTensor::Pixels(p) => ModalityData::Pixels(p),
            };
            let batch = ModalityBatch {
                data,
                input_mask: rows.input_mask,
                target_mask: rows.target_mask,
                decoder_attention_mask: rows.decoder_attention_mask,
            };
            (name, batch)
        })
        .collect();
    Batch {
        batch_size: m.batch_size,
        modalities,
    }
}

/// The background thread preparing batches.
pub struct Prefetcher {
    rx: Receiver<Result<PreparedBatch, PipelineError>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts preparing batches of `batch_size` samples, `depth` ahead.
    pub fn start(
        mut loader: StepLoader,
        mut stream: RankStream,
        builder: BatchBuilder,
        batch_size: usize,
        depth: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("fourm-input".into())
            .spawn(move || produce(&mut loader, &mut stream, &builder, batch_size, &tx))
            .expect("spawning the input thread");
        Self {
            rx,
            handle: Some(handle),
        }
    }

    /// The next batch, and how long the step waited for it. `aborted` is asked while waiting:
    /// a generation that ends while its input is stuck (a store outage) does not wait for it.
    pub fn next_batch(
        &mut self,
        aborted: impl Fn() -> Option<String>,
    ) -> Result<(PreparedBatch, Duration), PipelineError> {
        let t = Instant::now();
        loop {
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(batch) => return Ok((batch?, t.elapsed())),
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(reason) = aborted() {
                        return Err(PipelineError::Aborted(reason));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(PipelineError::NoValidData(0)),
            }
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the receiver stops the producer at its next send. It is not waited for: it may
        // be retrying a store that is down, and the next generation must not wait on that.
        let (_, dead) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dead));
        drop(self.handle.take());
    }
}

fn produce(
    loader: &mut StepLoader,
    stream: &mut RankStream,
    builder: &BatchBuilder,
    batch_size: usize,
    tx: &SyncSender<Result<PreparedBatch, PipelineError>>,
) {
    loop {
        let prepared = prepare(loader, stream, builder, batch_size);
        let failed = prepared.is_err();
        if tx.send(prepared).is_err() || failed {
            return;
        }
    }
}

fn prepare(
    loader: &mut StepLoader,
    stream: &mut RankStream,
    builder: &BatchBuilder,
    batch_size: usize,
) -> Result<PreparedBatch, PipelineError> {
    let mut good = Vec::new();
    let mut skipped = Vec::new();
    let mut quarantined: Vec<Quarantine> = Vec::new();
    let mut loader_wait = Duration::ZERO;
    let mut bad_in_a_row = 0usize;
    while good.len() < batch_size {
        let step = loader.next_step_blocking(stream, batch_size - good.len());
        loader_wait += step.waited;
        for s in step.samples {
            let at = s.at;
            match s.data {
                Ok(sample) => {
                    bad_in_a_row = 0;
                    good.push((at, sample));
                }
                Err(e) if e.is_transient() => {
                    return Err(PipelineError::Unavailable {
                        shard: at.shard,
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    bad_in_a_row += 1;
                    skipped.push(format!("{}/{}/#{}", at.epoch, at.shard, at.sample));
                    if !quarantined
                        .iter()
                        .any(|q| (q.epoch, q.shard) == (at.epoch, at.shard))
                    {
                        tracing::warn!(shard = at.shard, epoch = at.epoch, error = %e, "bad shard quarantined");
                        quarantined.push(Quarantine {
                            epoch: at.epoch,
                            shard: at.shard,
                            samples: loader.shard_samples(at.shard),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        if bad_in_a_row > 100 * batch_size.max(1) {
            return Err(PipelineError::NoValidData(bad_in_a_row));
        }
    }
    let keyed: Vec<(String, u64, &DecodedSample)> = good
        .iter()
        .map(|(at, s)| (format!("{}/{}/{}", at.epoch, at.shard, s.key), at.seed, s))
        .collect();
    let batch = builder.build(&keyed)?;
    let keys = keyed.into_iter().map(|(k, _, _)| k).collect();
    Ok(PreparedBatch {
        batch,
        progress: stream.take_progress(),
        keys,
        skipped,
        quarantined,
        loader_wait,
    })
}
