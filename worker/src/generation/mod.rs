//! One generation of a worker, as a sequence of named phases:
//!
//! 1. [`join`](Worker::join): rendezvous (rank, peers, restore point) and lease (assignment,
//!    cursor) from the coordinator;
//! 2. [`connect`](Worker::connect): the collective of the generation (CPU ring or NCCL);
//! 3. [`restore`](Worker::restore): the model, the optimizer and the step, fresh or from the
//!    committed checkpoint;
//! 4. [`train`](Worker::train): steps until the job's last one, an abort or a collective failure,
//!    checkpointing as the coordinator's policy says;
//! 5. [`await_commit`](Worker::await_commit): after the last step, wait (on events, not a timer)
//!    until its checkpoint is committed.

mod commit;
mod join;
mod restore;
mod train;

use std::sync::Arc;
use std::sync::Mutex;

use burn::tensor::Device;
use fourm_collective::AbortHandle;

pub use join::Joined;

use crate::audit::Audit;
use crate::client::Client;
use crate::config::WorkerConfig;
use crate::control::Control;
use crate::error::WorkerError;
use crate::failure::{self, Failure};
use crate::reporter::Reporter;
use crate::setup::DataSetup;

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationEnd {
    /// The job's last step is committed.
    Finished,
    /// The generation ended early (a peer failed, the coordinator said so): rejoin.
    Aborted(String),
}

/// Everything a worker builds once and uses in every generation.
pub struct Worker {
    /// Configuration.
    pub config: WorkerConfig,
    /// Worker id.
    pub id: String,
    /// Coordinator client.
    pub client: Client,
    /// Instructions from the heartbeat task.
    pub control: Arc<Control>,
    /// Dataset, tokenizer, modalities, masking.
    pub data: DataSetup,
    /// The CPU collective's listener (bound once, reused by every generation).
    pub listener: std::net::TcpListener,
    /// The async runtime (RPCs, storage).
    pub runtime: tokio::runtime::Handle,
    /// Training device (with autodiff).
    pub device: Device,
    /// Ordered progress and checkpoint reports.
    pub reporter: Reporter,
    /// Sample audit.
    pub audit: Option<Mutex<Audit>>,
    /// The key authenticating this job's ring (derived from the job token and id).
    pub ring_key: Vec<u8>,
    /// The device's peak FLOP/s, for the MFU estimate, when known.
    pub peak_flops: Option<f64>,
    /// Validation on the held-out split (`[eval]`).
    pub validation: Option<crate::validation::Validation>,
    /// Rank 0's checkpoint upload in flight, with its generation.
    pub upload: Mutex<Option<(u64, tokio::task::JoinHandle<()>)>>,
}

impl Worker {
    /// Runs generation `g` to its end. A failure on this worker's side (its collective, a
    /// restore, its input, a step) ends the generation for every rank and is not an error of
    /// the worker, which rejoins; only what no rejoining can mend (its configuration, its
    /// device) is returned as an error.
    pub fn run_generation(&self, g: u64) -> Result<GenerationEnd, WorkerError> {
        let abort = AbortHandle::new();
        self.control.enter(g, abort.clone());
        let joined = self.join(g)?;
        let span = tracing::info_span!("generation", generation = g, rank = joined.rank);
        let _in_generation = span.enter();
        let end = match self.phases(&joined, abort) {
            Ok(end) => Ok(end),
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => Ok(self.fail(g, e.as_failure())),
        };
        if !matches!(end, Ok(GenerationEnd::Finished)) {
            self.cancel_upload(g);
        }
        end
    }

    fn phases(&self, joined: &Joined, abort: AbortHandle) -> Result<GenerationEnd, WorkerError> {
        let mut collective = match self.connect(joined, abort)? {
            Ok(c) => c,
            Err(end) => return Ok(end),
        };
        let mut state = self.restore(joined)?;
        match self.train(joined, &mut state, collective.as_mut())? {
            Some(end) => Ok(end),
            None => self.await_commit(joined.total_steps),
        }
    }

    /// Ends generation `g` because of `failure` on this worker (unless the coordinator ended it
    /// first).
    pub(super) fn fail(&self, g: u64, failure: Failure) -> GenerationEnd {
        if let Some(reason) = self.control.aborted() {
            return GenerationEnd::Aborted(reason);
        }
        let message = failure.message.clone();
        self.runtime.block_on(failure::report(
            &self.client,
            &self.control,
            &self.id,
            g,
            failure,
        ));
        GenerationEnd::Aborted(message)
    }
}
