//! The checkpoint protocol: rank 0 begins a checkpoint and writes its files, every rank
//! acknowledges after reporting its progress through the step, the coordinator writes the
//! manifest (with the cursor of the step) and only then is the checkpoint committed.

use fourm_plan::Cursor;

use super::StateMachine;
use super::types::{Committed, EventState, Phase};
use crate::error::StateError;
use crate::manifest::{MANIFEST_FORMAT, Manifest, ManifestFile, folder_name};

impl StateMachine {
    /// Asks for a checkpoint as soon as possible; false if no generation runs.
    pub fn request_checkpoint(&mut self) -> bool {
        let running = self.running().is_some();
        self.checkpoint_requested |= running;
        running
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

        Ok(Some(Manifest {
            format: MANIFEST_FORMAT,
            job_id,
            step,
            generation: g.id,
            world_size: world,
            folder: folder_name(step),
            files,
            cursor: cursor.to_state(&plan),
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
        let cursor = Cursor::from_state(&self.plan, &manifest.cursor)?;
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
}
