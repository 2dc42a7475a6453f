//! The checkpoint protocol: rank 0 begins a checkpoint and writes its files (other ranks may
//! write files too: their optimizer shards), every rank acknowledges with the files it wrote
//! after reporting its progress through the step, the coordinator writes the manifest (with the
//! cursor of the step and every rank's files) and only then is the checkpoint committed.

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

    /// A rank starts writing its part of the checkpoint of `step` (rank 0 starts the
    /// checkpoint itself); returns the folder to write into.
    pub fn checkpoint_begin(
        &mut self,
        worker: &str,
        generation: u64,
        step: u64,
    ) -> Result<String, StateError> {
        let committed = self.committed.as_ref().map_or(0, |c| c.step);
        let (g, rank) = self.member_mut(worker, generation)?;
        if step <= committed || step == 0 {
            return Err(StateError::BadCheckpoint {
                worker: worker.into(),
                step,
                reason: format!("step {committed} is already committed"),
            });
        }
        let folder = folder_name(step, g.id);
        if rank == 0 {
            g.pending.entry(step).or_default().begun = true;
            self.checkpoint_requested = false;
        }
        Ok(folder)
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
        let incarnation = self.incarnation;
        let quarantined = self.quarantined.values().cloned().collect();
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
        if rank == 0 && !pending.begun {
            return Err(bad(
                "rank 0 acknowledged without beginning the checkpoint".into()
            ));
        }
        // A repeated acknowledgement changes nothing.
        if pending.acks.contains(&rank) {
            return Ok(None);
        }
        if let Some(f) = files
            .iter()
            .find(|f| pending.files.iter().any(|p| p.name == f.name))
        {
            return Err(bad(format!("{} is written by two ranks", f.name)));
        }
        pending.files.extend(files);
        pending.acks.insert(rank);
        if pending.committing || pending.acks.len() < world as usize || !pending.begun {
            return Ok(None);
        }
        pending.committing = true;
        let files = pending.files.clone();
        let cursor = g.cursor_at(&plan, step)?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            job_id,
            step,
            generation: g.id,
            incarnation,
            world_size: world,
            folder: folder_name(step, g.id),
            files,
            cursor: cursor.to_state(&plan),
            assignment: g.assignment.clone(),
            quarantined,
            committed_unix_ms: now,
        };
        self.commit_in_flight = Some(step);
        Ok(Some(manifest))
    }

    /// The checkpoint of `manifest` is durably committed. Returns committed folders to retire
    /// (beyond the last `keep_last`). The commit applies to the generation that wrote it; no
    /// other one can have formed meanwhile (none forms while a commit is in flight), and one
    /// waiting for it forms now, from it.
    pub fn checkpoint_committed(
        &mut self,
        manifest: &Manifest,
        now: u64,
    ) -> Result<Vec<String>, StateError> {
        let cursor = Cursor::from_state(&self.plan, &manifest.cursor)?;
        let step = manifest.step;
        if self.commit_in_flight == Some(step) {
            self.commit_in_flight = None;
        }
        self.committed = Some(Committed {
            step,
            folder: manifest.folder.clone(),
            cursor: cursor.clone(),
            assignment: manifest.assignment.clone(),
            quarantined: manifest.quarantined.clone(),
            at: now,
        });
        self.progress_at = now;
        self.history.push(manifest.folder.clone());
        let excess = self
            .history
            .len()
            .saturating_sub(self.config.keep_last.max(1));
        let removed: Vec<String> = self.history.drain(..excess).collect();
        let finished = step >= self.config.total_steps;
        let registered = self.workers.len() as u32;
        let mut scale_up = None;
        if let Phase::Running(g) = &mut self.phase
            && g.id == manifest.generation
        {
            g.committed(step, cursor);
            if registered > g.world_size() && g.world_size() < self.config.max_workers {
                scale_up = Some(g.world_size());
            }
        }
        if finished {
            if !matches!(self.phase, Phase::Failed(_)) {
                self.phase = Phase::Finished;
                self.last_change = format!("job finished at step {step}");
                self.push_event(EventState::Finished, 0, Vec::new());
            }
        } else if let Some(world) = scale_up {
            let reason = format!("scaling up from {world} workers after checkpoint {step}");
            self.end_generation(reason, now);
        }
        self.try_form(now);
        Ok(removed)
    }

    /// Committing the checkpoint of `step` failed (after the store's retries): it is dropped and
    /// the generation that wrote it ends, so that the next one retrains from the last commit and
    /// checkpoints again (a job never waits for a commit that will not come).
    pub fn checkpoint_failed(&mut self, step: u64, reason: &str, now: u64) {
        if self.commit_in_flight == Some(step) {
            self.commit_in_flight = None;
        }
        let writing = matches!(&self.phase, Phase::Running(g) if g.pending.contains_key(&step));
        if writing {
            self.end_generation(
                format!("committing checkpoint {step} failed: {reason}"),
                now,
            );
        }
        self.try_form(now);
    }

    /// The committed checkpoint was found bad (a rank could not restore it): the job goes back to
    /// `previous` (the newest good one, `None`: the start), and the running generation ends so
    /// that the next one restores that.
    pub fn checkpoint_bad(&mut self, folder: &str, previous: Option<Committed>, now: u64) {
        if self.committed.as_ref().is_none_or(|c| c.folder != folder) {
            return;
        }
        self.history.retain(|f| f != folder);
        match &previous {
            Some(p) => self.assignment = p.assignment.clone(),
            None => {
                if let Ok(a) = fourm_plan::Assignment::new(self.config.max_workers.max(1)) {
                    self.assignment = a;
                }
            }
        }
        self.committed = previous;
        self.end_generation(format!("checkpoint {folder} failed verification"), now);
        self.try_form(now);
    }
}
