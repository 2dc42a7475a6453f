//! How generations form and end, and how the job fails.
//!
//! A generation forms from the workers that are *ready*: registered, and heard from since the
//! last generation ended while in no generation (a worker still stuck in an old one, or silent
//! since, is not). The first generation of a coordinator waits up to the join timeout for
//! `max_workers`; after a failure the next one forms as soon as every registered worker is
//! ready, or silent for two heartbeat intervals (a dead worker whose heartbeat timeout has not
//! expired yet costs no wait), or still busy leaving the last generation past the join timeout
//! (a wedged worker is left behind). Ranks follow the natural order of the worker ids
//! and the data is re-dealt over them.

use super::generation::{Generation, RestorePoint};
use super::types::{EventState, GenerationEvent, Phase};
use super::{StateMachine, order};
use fourm_plan::derive_seed;

impl StateMachine {
    /// Ends the running generation: its members are told to abort and rejoin.
    pub(super) fn end_generation(&mut self, reason: String, now: u64) {
        let Phase::Running(g) =
            std::mem::replace(&mut self.phase, Phase::Waiting { deadline: None })
        else {
            return;
        };
        tracing::warn!(generation = g.id, reason = %reason, "generation ended");
        self.last_change = format!("generation {} ended: {reason}", g.id);
        self.checkpoint_requested = false;
        self.ended_at = now;
        self.push_event(EventState::Ended, g.id, g.members.clone());
    }

    /// The job cannot go on: every worker is told to stop with `reason`.
    pub fn fail(&mut self, reason: String, now: u64) {
        if matches!(self.phase, Phase::Failed(_) | Phase::Finished) {
            return;
        }
        self.end_generation(reason.clone(), now);
        tracing::error!(reason = %reason, "job failed");
        self.last_change = format!("job failed: {reason}");
        self.phase = Phase::Failed(reason);
        self.push_event(EventState::Failed, 0, Vec::new());
    }

    /// Why the job failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match &self.phase {
            Phase::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    pub(super) fn try_form(&mut self, now: u64) {
        let Phase::Waiting { deadline } = self.phase else {
            return;
        };
        if self.commit_in_flight.is_some() {
            // The next generation restores what is being committed.
            return;
        }
        let ended_at = self.ended_at;
        let ready = |w: &super::Worker| w.generation == 0 && w.last_seen >= ended_at;
        let mut members: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| ready(w))
            .map(|(id, _)| id.clone())
            .collect();
        let present = members.len() as u32;
        if present < self.config.min_workers.max(1) {
            self.phase = Phase::Waiting { deadline: None };
            return;
        }
        if present < self.config.max_workers {
            if self.generations_formed == 0 {
                // The job's first generation here: workers are still arriving.
                let deadline = deadline.unwrap_or(now + self.config.join_timeout_ms);
                if now < deadline {
                    self.phase = Phase::Waiting {
                        deadline: Some(deadline),
                    };
                    return;
                }
            } else {
                // After a failure: wait for workers still leaving the last generation (alive,
                // busy) up to the join timeout, for silent ones two heartbeat intervals only.
                let silent_grace = 2 * self.config.heartbeat_interval_ms;
                let busy_grace = self.config.join_timeout_ms.max(silent_grace);
                let since_end = now.saturating_sub(ended_at);
                let pending = self.workers.values().any(|w| {
                    let grace = if w.last_seen >= ended_at {
                        busy_grace
                    } else {
                        silent_grace
                    };
                    !ready(w) && since_end < grace
                });
                if pending {
                    return;
                }
            }
        }
        if self.generations_formed > u64::from(self.config.max_restarts) {
            let reason = format!(
                "{} restarts (job.max_restarts = {}); last change: {}",
                self.generations_formed, self.config.max_restarts, self.last_change
            );
            return self.fail(reason, now);
        }
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
        let id = self.next_generation_id();
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
        for m in &members {
            if let Some(w) = self.workers.get_mut(m) {
                w.advanced_at = now;
            }
        }
        self.push_event(EventState::Running, id, members.clone());
        self.phase = Phase::Running(Box::new(Generation::new(
            id, members, assignment, restore, start,
        )));
    }

    /// `incarnation (16 bits) | count in this incarnation (16 bits) | 32 random bits`: ordered
    /// (a later generation has a larger id) and not guessable by anyone without the salt.
    fn next_generation_id(&self) -> u64 {
        let random = derive_seed(&[self.salt, u64::from(self.formed_here)]) & 0xffff_ffff;
        (u64::from(self.incarnation & 0xffff) << 48)
            | (u64::from(self.formed_here & 0xffff) << 32)
            | random
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
