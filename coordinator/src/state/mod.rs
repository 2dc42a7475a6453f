//! The coordinator as a pure state machine: membership, generations, rank assignment, failure
//! detection, data leases and the cursor, and the checkpoint protocol. No I/O and no clock: every
//! event carries the time (`now`, milliseconds), and what must be written to storage comes back as
//! a value for the caller to write. The gRPC service is a thin adapter over it.

mod generation;
mod order;

use std::collections::BTreeMap;

use fourm_data::{Assignment, Cursor, EpochPlan, RankStream};

pub use generation::{Generation, PendingCheckpoint, RestorePoint};

use crate::error::StateError;
use crate::manifest::{MANIFEST_FORMAT, Manifest, ManifestFile, folder_name};

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

#[derive(Debug, Clone)]
struct Worker {
    info: WorkerInfo,
    last_seen: u64,
    step: u64,
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
    /// Upcoming (entry, epoch, shard, first unread position).
    pub upcoming: Vec<(u64, u64, u32, u64)>,
}

/// Metrics of the job as reported by the ranks.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    /// Highest step reported.
    pub step: u64,
    /// Loss reported by rank 0 for its last step.
    pub loss: f64,
    /// Per-modality loss reported by rank 0.
    pub modality_loss: BTreeMap<String, f64>,
    /// Sum over ranks of their last tokens/s.
    pub tokens_per_s: f64,
    /// Rank 0's MFU estimate.
    pub mfu: f64,
    /// Rank 0's data-wait fraction.
    pub data_wait: f64,
    per_rank_tokens: Vec<f64>,
}

/// One rank's metrics for a step.
#[derive(Debug, Clone, Default)]
pub struct StepMetrics {
    /// Total loss.
    pub loss: f64,
    /// Loss per modality.
    pub modality_loss: BTreeMap<String, f64>,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// MFU estimate.
    pub mfu: f64,
    /// Data-wait fraction.
    pub data_wait: f64,
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

    fn running(&self) -> Option<&Generation> {
        match &self.phase {
            Phase::Running(g) => Some(g),
            _ => None,
        }
    }

    /// A worker announces itself.
    pub fn register(&mut self, info: WorkerInfo, now: u64) -> Result<(), StateError> {
        let bad = |reason: String| StateError::BadRegistration {
            worker: info.worker_id.clone(),
            reason,
        };
        if info.worker_id.is_empty() || info.worker_id.len() > 256 {
            return Err(bad("worker id must have 1 to 256 characters".into()));
        }
        if info.config_digest.is_empty() {
            return Err(bad("missing config digest".into()));
        }
        if let Some(digest) = &self.job_digest
            && *digest != info.config_digest
        {
            return Err(bad(format!(
                "config digest {} differs from the job's {digest}",
                info.config_digest
            )));
        }
        if let Some(g) = self.running()
            && g.rank_of(&info.worker_id).is_some()
        {
            let reason = format!("worker {} registered again (restarted)", info.worker_id);
            self.end_generation(reason);
        }
        self.job_digest
            .get_or_insert_with(|| info.config_digest.clone());
        self.workers.insert(
            info.worker_id.clone(),
            Worker {
                info,
                last_seen: now,
                step: 0,
            },
        );
        self.try_form(now);
        Ok(())
    }

    /// A heartbeat: liveness, and the instruction for the worker.
    pub fn heartbeat(&mut self, worker: &str, generation: u64, step: u64, now: u64) -> Instruction {
        let Some(w) = self.workers.get_mut(worker) else {
            return Instruction::Register;
        };
        w.last_seen = now;
        w.step = w.step.max(step);
        let requested = self.checkpoint_requested;
        match &self.phase {
            Phase::Finished => Instruction::ShutDown,
            Phase::Running(g) => match g.rank_of(worker) {
                Some(_) if generation != g.id => Instruction::Join(g.id),
                Some(0) if requested => Instruction::Checkpoint(step + 1),
                Some(_) => Instruction::Continue,
                None if generation != 0 => Instruction::AbortCollective(self.last_change.clone()),
                None => Instruction::Continue,
            },
            Phase::Waiting { .. } if generation != 0 => {
                Instruction::AbortCollective(self.last_change.clone())
            }
            Phase::Waiting { .. } => Instruction::Continue,
        }
    }

    /// Time passes: lost workers end their generation; a waiting job may form one.
    pub fn tick(&mut self, now: u64) {
        let timeout = self.config.heartbeat_timeout_ms;
        let lost: Vec<(String, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.last_seen) > timeout)
            .map(|(id, w)| (id.clone(), now - w.last_seen))
            .collect();
        for (id, silent) in lost {
            self.workers.remove(&id);
            if self.running().is_some_and(|g| g.rank_of(&id).is_some()) {
                self.end_generation(format!("worker {id} missed its heartbeats for {silent} ms"));
            }
        }
        self.try_form(now);
    }

    /// A worker leaves.
    pub fn leave(&mut self, worker: &str, reason: &str, now: u64) {
        self.workers.remove(worker);
        if self.running().is_some_and(|g| g.rank_of(worker).is_some()) {
            self.end_generation(format!("worker {worker} left: {reason}"));
        }
        self.try_form(now);
    }

    /// A worker's collective failed.
    pub fn collective_error(
        &mut self,
        worker: &str,
        generation: u64,
        message: &str,
        now: u64,
    ) -> Result<(), StateError> {
        self.member(worker, generation)?;
        self.end_generation(format!(
            "collective error reported by worker {worker}: {message}"
        ));
        self.try_form(now);
        Ok(())
    }

    /// Asks for a checkpoint as soon as possible; false if no generation runs.
    pub fn request_checkpoint(&mut self) -> bool {
        let running = self.running().is_some();
        self.checkpoint_requested |= running;
        running
    }

    fn member(&self, worker: &str, generation: u64) -> Result<(&Generation, u32), StateError> {
        if !self.workers.contains_key(worker) {
            return Err(StateError::UnknownWorker {
                worker: worker.into(),
            });
        }
        let current = self.generation_id();
        let g =
            self.running()
                .filter(|g| g.id == generation)
                .ok_or(StateError::StaleGeneration {
                    got: generation,
                    current,
                })?;
        let rank = g.rank_of(worker).ok_or_else(|| StateError::NotMember {
            worker: worker.into(),
            generation,
        })?;
        Ok((g, rank))
    }

    fn member_mut(
        &mut self,
        worker: &str,
        generation: u64,
    ) -> Result<(&mut Generation, u32), StateError> {
        let (_, rank) = self.member(worker, generation)?;
        match &mut self.phase {
            Phase::Running(g) => Ok((g, rank)),
            _ => unreachable!("member() checked the generation runs"),
        }
    }

    /// Rank, peers, restore point; rank 0 may publish its NCCL id.
    pub fn rendezvous(
        &mut self,
        worker: &str,
        generation: u64,
        nccl_id: Option<Vec<u8>>,
    ) -> Result<RendezvousInfo, StateError> {
        let (g, rank) = self.member_mut(worker, generation)?;
        if let Some(id) = nccl_id.filter(|id| !id.is_empty()) {
            if rank != 0 {
                return Err(StateError::NotRankZero {
                    worker: worker.into(),
                    rank,
                    what: "publish the NCCL id",
                });
            }
            g.nccl_id = Some(id);
        }
        let members = g.members.clone();
        let (nccl_id, restore) = (g.nccl_id.clone(), g.restore.clone());
        let peers = members
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    self.workers
                        .get(m)
                        .map(|w| w.info.collective_address.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        Ok(RendezvousInfo {
            generation,
            rank,
            peers,
            nccl_id,
            restore,
        })
    }

    /// The data of a rank: assignment, start cursor, next `count` shards.
    pub fn lease(
        &self,
        worker: &str,
        generation: u64,
        count: usize,
    ) -> Result<LeaseInfo, StateError> {
        let (g, rank) = self.member(worker, generation)?;
        let stream = RankStream::new(&self.plan, &g.assignment, rank, 1, &g.start);
        let upcoming = stream
            .upcoming(count)
            .into_iter()
            .map(|e| {
                (
                    e.index,
                    e.epoch,
                    e.shard,
                    g.start.consumed(&self.plan, e.index),
                )
            })
            .collect();
        Ok(LeaseInfo {
            assignment: g.assignment.clone(),
            start: g.start.clone(),
            upcoming,
        })
    }

    /// Progress of a rank after `step`: consumed prefixes and metrics.
    pub fn progress(
        &mut self,
        worker: &str,
        generation: u64,
        step: u64,
        entries: &[(u64, u64)],
        metrics: Option<StepMetrics>,
    ) -> Result<(), StateError> {
        let plan = self.plan.clone();
        let (g, rank) = self.member_mut(worker, generation)?;
        g.record_progress(&plan, rank, step, entries)
            .map_err(|reason| StateError::BadProgress {
                worker: worker.into(),
                reason,
            })?;
        let world = g.world_size() as usize;
        if let Some(m) = metrics {
            let jm = &mut self.metrics;
            jm.per_rank_tokens.resize(world, 0.0);
            jm.per_rank_tokens[rank as usize] = m.tokens_per_s;
            jm.tokens_per_s = jm.per_rank_tokens.iter().sum();
            if rank == 0 {
                jm.loss = m.loss;
                jm.modality_loss = m.modality_loss;
                jm.mfu = m.mfu;
                jm.data_wait = m.data_wait;
            }
        }
        self.metrics.step = self.metrics.step.max(step);
        if let Some(w) = self.workers.get_mut(worker) {
            w.step = w.step.max(step);
        }
        Ok(())
    }

    /// Rank 0 starts the checkpoint of `step`; returns the folder to write into.
    pub fn checkpoint_begin(
        &mut self,
        worker: &str,
        generation: u64,
        step: u64,
    ) -> Result<String, StateError> {
        let committed = self.committed.as_ref().map_or(0, |c| c.step);
        let (g, rank) = self.member_mut(worker, generation)?;
        if rank != 0 {
            return Err(StateError::NotRankZero {
                worker: worker.into(),
                rank,
                what: "begin a checkpoint",
            });
        }
        if step <= committed || step == 0 {
            return Err(StateError::BadCheckpoint {
                worker: worker.into(),
                step,
                reason: format!("step {committed} is already committed"),
            });
        }
        g.pending.entry(step).or_default().begun = true;
        self.checkpoint_requested = false;
        Ok(folder_name(step))
    }

    /// A rank wrote its part of the checkpoint of `step` (after reporting its progress through
    /// `step`). Returns the manifest to write once every rank has.
    pub fn checkpoint_done(
        &mut self,
        worker: &str,
        generation: u64,
        step: u64,
        files: Vec<ManifestFile>,
        now: u64,
    ) -> Result<Option<Manifest>, StateError> {
        let plan = self.plan.clone();
        let job_id = self.config.job_id.clone();
        let committed = self.committed.as_ref().map_or(0, |c| c.step);
        let (g, rank) = self.member_mut(worker, generation)?;
        let bad = |reason: String| StateError::BadCheckpoint {
            worker: worker.into(),
            step,
            reason,
        };
        if step <= committed {
            return Err(bad(format!("step {committed} is already committed")));
        }
        if g.reported_step[rank as usize] < step {
            return Err(bad(format!(
                "progress reported only through step {}",
                g.reported_step[rank as usize]
            )));
        }
        let world = g.world_size();
        let pending = g.pending.entry(step).or_default();
        if rank == 0 {
            if !pending.begun {
                return Err(bad(
                    "rank 0 acknowledged without beginning the checkpoint".into()
                ));
            }
            pending.files = files;
        } else if !files.is_empty() {
            return Err(bad("only rank 0 writes checkpoint files".into()));
        }
        pending.acks.insert(rank);
        if pending.committing || pending.acks.len() < world as usize || !pending.begun {
            return Ok(None);
        }
        pending.committing = true;
        let files = pending.files.clone();
        let cursor = g.cursor_at(&plan, step)?;
        let cursor_json =
            serde_json::from_str(&cursor.to_json(&plan)).expect("cursor JSON is JSON");
        Ok(Some(Manifest {
            format: MANIFEST_FORMAT,
            job_id,
            step,
            generation: g.id,
            world_size: world,
            folder: folder_name(step),
            files,
            cursor: cursor_json,
            assignment: g.assignment.clone(),
            committed_unix_ms: now,
        }))
    }

    /// The manifest of `manifest.step` is durably written. Returns folders to delete (beyond the
    /// last `keep_last`).
    pub fn checkpoint_committed(
        &mut self,
        manifest: &Manifest,
        now: u64,
    ) -> Result<Vec<String>, StateError> {
        let cursor = Cursor::from_json(&self.plan, &manifest.cursor.to_string())?;
        let step = manifest.step;
        self.committed = Some(Committed {
            step,
            folder: manifest.folder.clone(),
            cursor: cursor.clone(),
            assignment: manifest.assignment.clone(),
            at: now,
        });
        self.history.push(manifest.folder.clone());
        let excess = self
            .history
            .len()
            .saturating_sub(self.config.keep_last.max(1));
        let removed: Vec<String> = self.history.drain(..excess).collect();
        let waiting = self.workers.len() as u32;
        if let Phase::Running(g) = &mut self.phase {
            g.committed(step, cursor);
            if step >= self.config.total_steps {
                self.phase = Phase::Finished;
                self.last_change = format!("job finished at step {step}");
                self.push_event(EventState::Finished, 0, Vec::new());
            } else if waiting > g.world_size() && g.world_size() < self.config.max_workers {
                let reason = format!(
                    "scaling up from {} workers after checkpoint {step}",
                    g.world_size()
                );
                self.end_generation(reason);
                self.try_form(now);
            }
        }
        Ok(removed)
    }

    /// Writing the manifest of `step` failed: the checkpoint is dropped, training goes on.
    pub fn checkpoint_failed(&mut self, step: u64) {
        if let Phase::Running(g) = &mut self.phase {
            g.pending.remove(&step);
        }
    }

    /// A snapshot of the job.
    pub fn status(&self) -> Status {
        let (generation, state, world, leases) = match &self.phase {
            Phase::Running(g) => (
                g.id,
                EventState::Running,
                g.world_size(),
                g.open_entries(&self.plan) as u64,
            ),
            Phase::Waiting { .. } => (0, EventState::Waiting, 0, 0),
            Phase::Finished => (0, EventState::Finished, 0, 0),
        };
        Status {
            job_id: self.config.job_id.clone(),
            generation,
            state,
            world_size: world,
            committed_step: self.committed.as_ref().map_or(0, |c| c.step),
            committed_at: self.committed.as_ref().map(|c| c.at),
            workers_alive: self.workers.len() as u32,
            generations_formed: self.generations_formed,
            leases_outstanding: leases,
            last_change: self.last_change.clone(),
            metrics: self.metrics.clone(),
        }
    }

    fn end_generation(&mut self, reason: String) {
        let Phase::Running(g) =
            std::mem::replace(&mut self.phase, Phase::Waiting { deadline: None })
        else {
            return;
        };
        tracing::warn!(generation = g.id, reason = %reason, "generation ended");
        self.last_change = format!("generation {} ended: {reason}", g.id);
        self.checkpoint_requested = false;
        self.push_event(EventState::Ended, g.id, g.members.clone());
    }

    fn try_form(&mut self, now: u64) {
        let Phase::Waiting { deadline } = self.phase else {
            return;
        };
        let present = self.workers.len() as u32;
        if present < self.config.min_workers.max(1) {
            self.phase = Phase::Waiting { deadline: None };
            return;
        }
        let deadline = deadline.unwrap_or(now + self.config.join_timeout_ms);
        if present < self.config.max_workers && now < deadline {
            self.phase = Phase::Waiting {
                deadline: Some(deadline),
            };
            return;
        }
        let mut members: Vec<String> = self.workers.keys().cloned().collect();
        members.sort_by(|a, b| order::natural(a, b));
        members.truncate(self.config.max_workers as usize);
        let world = members.len() as u32;
        let start = self
            .committed
            .as_ref()
            .map(|c| c.cursor.clone())
            .unwrap_or_default();
        let assignment = match self.assignment.replan(&self.plan, &start, world) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot plan the data assignment");
                return;
            }
        };
        self.assignment = assignment.clone();
        self.formed_here += 1;
        let id = (u64::from(self.incarnation) << 32) | u64::from(self.formed_here);
        let restore = self.committed.as_ref().map(|c| RestorePoint {
            step: c.step,
            folder: c.folder.clone(),
        });
        tracing::info!(generation = id, world, restore = ?restore.as_ref().map(|r| r.step), "generation formed");
        self.last_change = format!(
            "generation {id} formed with {world} workers: {}",
            members.join(", ")
        );
        self.generations_formed += 1;
        self.push_event(EventState::Running, id, members.clone());
        self.phase = Phase::Running(Box::new(Generation::new(
            id, members, assignment, restore, start,
        )));
    }

    fn push_event(&mut self, state: EventState, generation: u64, members: Vec<String>) {
        self.events.push(GenerationEvent {
            generation,
            members,
            state,
            reason: self.last_change.clone(),
        });
    }
}
