//! The values the state machine takes and returns: its configuration, workers, the committed
//! checkpoint, the job's phase, instructions, events, rendezvous and lease answers, the status.

use fourm_plan::{Assignment, Cursor};

use super::generation::{Generation, RestorePoint};
use super::metrics::JobMetrics;
use crate::manifest::Quarantined;

/// What the state machine needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Job identifier.
    pub job_id: String,
    /// A generation forms once this many workers are present...
    pub min_workers: u32,
    /// ...waiting up to `join_timeout_ms` for this many.
    pub max_workers: u32,
    /// How long to wait for more workers once `min_workers` are present.
    pub join_timeout_ms: u64,
    /// Heartbeat period the workers are told to use.
    pub heartbeat_interval_ms: u64,
    /// A worker silent for this long is lost.
    pub heartbeat_timeout_ms: u64,
    /// Checkpoint every this many steps (0: only on request and at the end).
    pub checkpoint_every: u64,
    /// Committed checkpoints to keep.
    pub keep_last: usize,
    /// Steps of the whole job.
    pub total_steps: u64,
    /// A job that makes no progress (no commit, no step beyond the furthest reached) for this
    /// long fails.
    pub stall_timeout_ms: u64,
    /// Generations formed after the first (restarts) before the job fails.
    pub max_restarts: u32,
    /// A member whose step does not advance for this long while its generation runs is
    /// evicted (a wedged restore, a blocked input pipeline).
    pub progress_timeout_ms: u64,
}

/// A registering worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Unique id.
    pub worker_id: String,
    /// CPU collective address.
    pub collective_address: String,
    /// Device description.
    pub device: String,
    /// Digest of its configuration.
    pub config_digest: String,
}

/// The latest committed checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Its step.
    pub step: u64,
    /// Its folder.
    pub folder: String,
    /// Data cursor after the step.
    pub cursor: Cursor,
    /// Assignment in force.
    pub assignment: Assignment,
    /// Shards quarantined up to this checkpoint.
    pub quarantined: Vec<Quarantined>,
    /// Commit time (ms).
    pub at: u64,
}

/// Where the job stands.
#[derive(Debug, Clone)]
pub enum Phase {
    /// No generation; `deadline` is when one forms even without `max_workers`.
    Waiting {
        /// Join deadline, once `min_workers` are present.
        deadline: Option<u64>,
    },
    /// A generation is training.
    Running(Box<Generation>),
    /// The job is done.
    Finished,
    /// The job cannot make progress (stalled, too many restarts, fenced): it ends with this
    /// error.
    Failed(String),
}

/// What a heartbeat reply tells the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// Carry on.
    Continue,
    /// Your generation ended: abort and rejoin.
    AbortCollective(String),
    /// Checkpoint after `step` (rank 0 only).
    Checkpoint(u64),
    /// The job is over.
    ShutDown,
    /// A generation with you in it is ready.
    Join(u64),
    /// Unknown to the coordinator: register.
    Register,
    /// The job failed: stop with this error.
    Fail(String),
}

/// A generation change, for watchers and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationEvent {
    /// The generation (0: none).
    pub generation: u64,
    /// Members in rank order.
    pub members: Vec<String>,
    /// New state.
    pub state: EventState,
    /// Why.
    pub reason: String,
}

/// State in a [`GenerationEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    /// Waiting for workers.
    Waiting,
    /// Running.
    Running,
    /// Ended.
    Ended,
    /// Job finished.
    Finished,
    /// Job failed.
    Failed,
}

/// What a rank needs to train in its generation.
#[derive(Debug, Clone)]
pub struct RendezvousInfo {
    /// Generation.
    pub generation: u64,
    /// Rank of the caller.
    pub rank: u32,
    /// Members in rank order: (worker id, collective address).
    pub peers: Vec<(String, String)>,
    /// Rank 0's NCCL id, once published.
    pub nccl_id: Option<Vec<u8>>,
    /// Checkpoint to restore.
    pub restore: Option<RestorePoint>,
}

/// What a rank reads.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    /// Assignment of the generation.
    pub assignment: Assignment,
    /// Cursor the generation starts from.
    pub start: Cursor,
    /// The next shard entries the rank reads.
    pub upcoming: Vec<UpcomingShard>,
}

/// A shard entry a rank is about to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpcomingShard {
    /// Index in the plan's queue.
    pub entry: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its shard.
    pub shard: u32,
    /// First position of its read order not consumed by committed steps.
    pub start: u64,
}

/// Snapshot for `JobStatus`, `/status` and `/metrics`.
#[derive(Debug, Clone)]
pub struct Status {
    /// Job id.
    pub job_id: String,
    /// Current generation (0: none).
    pub generation: u64,
    /// Its state.
    pub state: EventState,
    /// Ranks.
    pub world_size: u32,
    /// Latest committed step.
    pub committed_step: u64,
    /// When it was committed (ms).
    pub committed_at: Option<u64>,
    /// Registered workers.
    pub workers_alive: u32,
    /// Generations formed.
    pub generations_formed: u64,
    /// Shard entries being read.
    pub leases_outstanding: u64,
    /// Last reason for a generation change.
    pub last_change: String,
    /// Reported metrics.
    pub metrics: JobMetrics,
    /// Why the job failed, if it did.
    pub failure: Option<String>,
    /// Shards taken out of training.
    pub quarantined: Vec<Quarantined>,
}
