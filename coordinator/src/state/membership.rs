//! Membership: workers register and heartbeat, silent or departed ones are lost, generations
//! form (ranks by natural order of the worker ids, the data re-dealt over them) and end, and the
//! members of a generation meet at its rendezvous.

use super::generation::{Generation, RestorePoint};
use super::types::{EventState, GenerationEvent, Instruction, Phase, RendezvousInfo, WorkerInfo};
use super::{StateMachine, Worker, order};
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

    pub(super) fn end_generation(&mut self, reason: String) {
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

    pub(super) fn try_form(&mut self, now: u64) {
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

    pub(super) fn push_event(&mut self, state: EventState, generation: u64, members: Vec<String>) {
        self.events.push(GenerationEvent {
            generation,
            members,
            state,
            reason: self.last_change.clone(),
        });
    }
}
