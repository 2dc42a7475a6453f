//! The coordinator as a pure state machine: membership, generations, rank assignment, failure
//! detection, data leases and the cursor, and the checkpoint protocol. No I/O and no clock: every
//! event carries the time (`now`, milliseconds), and what must be written to storage comes back as
//! a value for the caller to write. The gRPC service is a thin adapter over it.
//!
//! The machine is one struct, [`StateMachine`]; its events are grouped by concern:
//! [`membership`] (register, heartbeats, losses, forming and ending generations, rendezvous),
//! [`leases`] (what each rank reads, the progress it reports), [`checkpoints`] (begin, done,
//! committed, failed) and [`metrics`] (what the ranks report, the status).

mod checkpoints;
mod formation;
mod generation;
mod leases;
mod membership;
mod metrics;
mod order;
mod types;

use std::collections::BTreeMap;

use fourm_plan::{Assignment, EpochPlan};

pub use generation::{Generation, PendingCheckpoint, RestorePoint};
pub use leases::Progress;
pub use metrics::{JobMetrics, StepMetrics};
pub use types::{
    Committed, EventState, GenerationEvent, Instruction, LeaseInfo, Phase, RendezvousInfo,
    StateConfig, Status, UpcomingShard, WorkerInfo,
};

use crate::error::StateError;
use crate::manifest::Quarantined;

#[derive(Debug, Clone)]
struct Worker {
    info: WorkerInfo,
    last_seen: u64,
    /// Highest step it reported.
    step: u64,
    /// When that step last increased (or it joined its generation).
    advanced_at: u64,
    /// The generation its last heartbeat said it is in (0: none, ready to join one).
    generation: u64,
}

/// What a coordinator process starts from (read from durable storage).
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// This process's incarnation: generation ids carry it, so they never repeat.
    pub incarnation: u32,
    /// The newest committed checkpoint.
    pub committed: Option<Committed>,
    /// Every restorable committed folder, oldest first (the retention window's contents).
    pub history: Vec<String>,
    /// Random bits mixed into generation ids, so that they cannot be guessed.
    pub salt: u64,
}

/// The coordinator's state.
#[derive(Debug)]
pub struct StateMachine {
    config: StateConfig,
    plan: EpochPlan,
    incarnation: u32,
    salt: u64,
    formed_here: u32,
    workers: BTreeMap<String, Worker>,
    job_digest: Option<String>,
    phase: Phase,
    committed: Option<Committed>,
    history: Vec<String>,
    assignment: Assignment,
    last_change: String,
    generations_formed: u64,
    checkpoint_requested: bool,
    metrics: JobMetrics,
    events: Vec<GenerationEvent>,
    /// When the last generation ended: only workers heard from since may join the next.
    ended_at: u64,
    /// A manifest being written (its step): no generation forms until it is committed or failed,
    /// so that the next one restores it.
    commit_in_flight: Option<u64>,
    /// When the job last made progress (a commit, or a step never reached before).
    progress_at: u64,
    /// Highest step any rank ever reported.
    best_step: u64,
    /// Shards taken out of training, by (epoch, shard).
    quarantined: BTreeMap<(u64, u32), Quarantined>,
}

impl StateMachine {
    /// A coordinator for `plan`, resuming from what durable storage holds (`start`).
    pub fn new(config: StateConfig, plan: EpochPlan, start: Start) -> Result<Self, StateError> {
        let Start {
            incarnation,
            committed,
            mut history,
            salt,
        } = start;
        let assignment = match &committed {
            Some(c) => c.assignment.clone(),
            None => Assignment::new(config.max_workers.max(1))?,
        };
        let finished = committed
            .as_ref()
            .is_some_and(|c| c.step >= config.total_steps);
        if let Some(c) = &committed
            && !history.contains(&c.folder)
        {
            history.push(c.folder.clone());
        }
        let quarantined = committed
            .iter()
            .flat_map(|c| &c.quarantined)
            .map(|q| ((q.epoch, q.shard), q.clone()))
            .collect();
        Ok(Self {
            config,
            plan,
            incarnation,
            salt,
            formed_here: 0,
            workers: BTreeMap::new(),
            job_digest: None,
            phase: if finished {
                Phase::Finished
            } else {
                Phase::Waiting { deadline: None }
            },
            committed,
            history,
            assignment,
            last_change: "coordinator started".into(),
            generations_formed: 0,
            checkpoint_requested: false,
            metrics: JobMetrics::default(),
            events: Vec::new(),
            ended_at: 0,
            commit_in_flight: None,
            progress_at: 0,
            best_step: 0,
            quarantined,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// The data plan.
    pub fn plan(&self) -> &EpochPlan {
        &self.plan
    }

    /// Where the job stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The latest committed checkpoint.
    pub fn committed(&self) -> Option<&Committed> {
        self.committed.as_ref()
    }

    /// Generation changes since the last call (for watchers and logs).
    pub fn take_events(&mut self) -> Vec<GenerationEvent> {
        std::mem::take(&mut self.events)
    }

    /// The current generation id (0 if none is running).
    pub fn generation_id(&self) -> u64 {
        match &self.phase {
            Phase::Running(g) => g.id,
            _ => 0,
        }
    }

    pub(super) fn running(&self) -> Option<&Generation> {
        match &self.phase {
            Phase::Running(g) => Some(g),
            _ => None,
        }
    }
}
