//! Checkpoints of a generation: rank 0 writes the files in the background after a copy to host
//! memory, every rank acknowledges, the coordinator commits; and phase 5, waiting for the last
//! step's commit.

use fourm_data::{DatasetStore, StoreConfig};
use fourm_proto::v1 as pb;

use super::restore::split_folder;
use super::{GenerationEnd, Joined, Worker};
use crate::checkpoint::{self, TrainerState};
use crate::error::WorkerError;
use crate::reporter::Report;
use crate::step::TrainState;

impl Worker {
    /// Writes this rank's part of the checkpoint after `state.step` (rank 0 writes the files, in
    /// the background after a copy to host memory).
    pub(super) fn checkpoint(
        &self,
        joined: &Joined,
        state: &TrainState,
    ) -> Result<(), WorkerError> {
        let (g, step) = (joined.generation, state.step);
        let done = |files: Vec<pb::CheckpointFile>| pb::CheckpointDoneRequest {
            worker_id: self.id.clone(),
            generation: g,
            step,
            files,
        };
        if joined.rank != 0 {
            self.reporter.send(Report::Done(done(Vec::new())));
            return Ok(());
        }
        self.control.set_phase(pb::WorkerPhase::Checkpointing);
        let begin =
            self.runtime
                .block_on(self.client.checkpoint_begin(pb::CheckpointBeginRequest {
                    worker_id: self.id.clone(),
                    generation: g,
                    step,
                }))?;
        let trainer = TrainerState {
            format: 1,
            step,
            generation: g,
            world_size: joined.world,
            schedule: state.schedule,
            adamw: *state.adamw.config(),
            init_seed: self.config.model.init_seed,
            config_digest: self.config.digest(),
            config: serde_json::to_value(&self.config).unwrap_or_default(),
        };
        let snapshot = checkpoint::snapshot(&state.model, &state.layout, &state.adamw, &trainer)?;
        let (root, folder) = split_folder(&begin.prefix)?;
        let store = DatasetStore::open(root, StoreConfig::default())?;
        let path = store.root().clone().join(folder);
        let reporter = self.reporter.clone();
        let control = self.control.clone();
        let request = done(Vec::new());
        self.runtime.spawn(async move {
            match snapshot.upload(store.inner().clone(), path).await {
                Ok(files) => {
                    let files = files
                        .into_iter()
                        .map(|f| pb::CheckpointFile {
                            name: f.name,
                            size: f.size,
                            sha256: f.sha256,
                        })
                        .collect();
                    reporter.send(Report::Done(pb::CheckpointDoneRequest { files, ..request }));
                }
                Err(e) => {
                    tracing::error!(step, error = %e, "checkpoint upload failed");
                    control.abort(&format!("checkpoint upload failed: {e}"));
                }
            }
        });
        self.control.set_phase(pb::WorkerPhase::Training);
        Ok(())
    }

    /// Writes the audit records of every committed step.
    pub(super) fn flush_audit(&self) -> Result<(), WorkerError> {
        if let Some(audit) = &self.audit {
            let committed = self.reporter.committed();
            audit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .committed(committed)
                .map_err(|e| WorkerError::io("writing the sample audit", e))?;
        }
        Ok(())
    }

    /// Phase 5: every step is trained; waits until the last one is committed (or the generation
    /// ends), woken by the reporter's commits and the coordinator's instructions.
    pub(super) fn await_commit(&self, total: u64) -> Result<GenerationEnd, WorkerError> {
        let mut committed = self.reporter.watch_committed();
        loop {
            let instructed = self.control.changed();
            if self.control.is_finished() {
                // The coordinator finishes a job only once its last step is committed.
                self.reporter.set_committed(total);
            }
            let done = self.reporter.committed() >= total;
            self.flush_audit()?;
            if done {
                return Ok(GenerationEnd::Finished);
            }
            if let Some(reason) = self.control.aborted() {
                return Ok(GenerationEnd::Aborted(reason));
            }
            self.runtime.block_on(async {
                tokio::select! {
                    _ = committed.changed() => {}
                    _ = instructed => {}
                }
            });
        }
    }
}
