//! Membership: workers register and heartbeat, silent, departed or wedged ones are lost, and the
//! members of a generation meet at its rendezvous. How generations form and end is in
//! [`super::formation`].

use super::generation::Generation;
use super::types::{Instruction, Phase, RendezvousInfo, WorkerInfo};
use super::{StateMachine, Worker};
use crate::error::StateError;

impl StateMachine {
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
            self.end_generation(reason, now);
        }
        self.job_digest
            .get_or_insert_with(|| info.config_digest.clone());
        self.workers.insert(
            info.worker_id.clone(),
            Worker {
                info,
                last_seen: now,
                step: 0,
                advanced_at: now,
                generation: 0,
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
        w.generation = generation;
        if step > w.step {
            w.step = step;
            w.advanced_at = now;
        }
        self.note_step(step, now);
        let requested = self.checkpoint_requested;
        match &self.phase {
            Phase::Finished => Instruction::ShutDown,
            Phase::Failed(reason) => Instruction::Fail(reason.clone()),
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

    /// Time passes: lost workers end their generation, so does a wedged member; a job without
    /// progress for too long fails; a waiting job may form a generation.
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
                self.end_generation(
                    format!("worker {id} missed its heartbeats for {silent} ms"),
                    now,
                );
            }
        }
        if let Some((id, idle)) = self.wedged(now) {
            self.end_generation(
                format!("worker {id} made no progress for {idle} ms (evicted)"),
                now,
            );
        }
        let stalled = now.saturating_sub(self.progress_at);
        if !matches!(self.phase, Phase::Finished | Phase::Failed(_))
            && stalled > self.config.stall_timeout_ms
        {
            self.fail(
                format!(
                    "no progress for {stalled} ms (job.stall_timeout); committed step {}, furthest step {}; last change: {}",
                    self.committed.as_ref().map_or(0, |c| c.step),
                    self.best_step,
                    self.last_change
                ),
                now,
            );
        }
        self.try_form(now);
    }

    /// A member of the running generation whose step has not advanced for longer than the
    /// progress timeout (members done with the job's last step excepted).
    fn wedged(&self, now: u64) -> Option<(String, u64)> {
        let g = self.running()?;
        g.members.iter().find_map(|m| {
            let w = self.workers.get(m)?;
            let idle = now.saturating_sub(w.advanced_at);
            (w.step < self.config.total_steps && idle > self.config.progress_timeout_ms)
                .then(|| (m.clone(), idle))
        })
    }

    /// A rank reached `step`: progress if no rank ever went that far.
    pub(super) fn note_step(&mut self, step: u64, now: u64) {
        if step > self.best_step {
            self.best_step = step;
            self.progress_at = now;
        }
    }

    /// A worker leaves.
    pub fn leave(&mut self, worker: &str, reason: &str, now: u64) {
        self.workers.remove(worker);
        if self.running().is_some_and(|g| g.rank_of(worker).is_some()) {
            self.end_generation(format!("worker {worker} left: {reason}"), now);
        }
        self.try_form(now);
    }

    /// A member's generation failed on its side (its collective, a checkpoint upload, a
    /// restore, its input): the generation ends at once and the next one forms from the workers
    /// that report in.
    pub fn report_failure(
        &mut self,
        worker: &str,
        generation: u64,
        message: &str,
        now: u64,
    ) -> Result<(), StateError> {
        self.member(worker, generation)?;
        self.end_generation(format!("worker {worker} reported: {message}"), now);
        self.try_form(now);
        Ok(())
    }

    /// The rank of `worker` in generation `generation`, if it is a member of that running
    /// generation (`StaleGeneration`, `NotMember`, `UnknownWorker` otherwise).
    pub fn check_member(&self, worker: &str, generation: u64) -> Result<u32, StateError> {
        self.member(worker, generation).map(|(_, rank)| rank)
    }

    pub(super) fn member(
        &self,
        worker: &str,
        generation: u64,
    ) -> Result<(&Generation, u32), StateError> {
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

    pub(super) fn member_mut(
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
}
