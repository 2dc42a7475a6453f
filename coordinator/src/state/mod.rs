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
mod generation;
mod leases;
mod membership;
mod metrics;
mod order;
mod types;

use std::collections::BTreeMap;

use fourm_plan::{Assignment, EpochPlan};

pub use generation::{Generation, PendingCheckpoint, RestorePoint};
pub use metrics::{JobMetrics, StepMetrics};
pub use types::{
    Committed, EventState, GenerationEvent, Instruction, LeaseInfo, Phase, RendezvousInfo,
    StateConfig, Status, UpcomingShard, WorkerInfo,
};

use crate::error::StateError;

#[derive(Debug, Clone)]
struct Worker {
    info: WorkerInfo,
    last_seen: u64,
    step: u64,
}

/// The coordinator's state.
#[derive(Debug)]
pub struct StateMachine {
    config: StateConfig,
    plan: EpochPlan,
    incarnation: u32,
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
}

impl StateMachine {
    /// A coordinator for `plan`, resuming after `committed` (the latest manifest found in storage,
    /// if any). `incarnation` distinguishes the generations of successive coordinator processes.
    pub fn new(
        config: StateConfig,
        plan: EpochPlan,
        incarnation: u32,
        committed: Option<Committed>,
    ) -> Result<Self, StateError> {
        let assignment = match &committed {
            Some(c) => c.assignment.clone(),
            None => Assignment::new(config.max_workers.max(1))?,
        };
        let finished = committed
            .as_ref()
            .is_some_and(|c| c.step >= config.total_steps);
        let history = committed.iter().map(|c| c.folder.clone()).collect();
        Ok(Self {
            config,
            plan,
            incarnation,
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
