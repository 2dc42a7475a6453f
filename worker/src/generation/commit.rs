//! Checkpoints of a generation: rank 0 writes the files (and, with the optimizer state sharded,
//! every rank its shard) in the background after a copy to host memory, every rank acknowledges,
//! the coordinator commits; and phase 5, waiting for the last step's commit.

use fourm_data::{DatasetStore, StoreConfig};
use fourm_proto::v1 as pb;

use super::restore::split_folder;
use super::{GenerationEnd, Joined, Worker};
use crate::checkpoint::{self, CheckpointError, TrainerState, UploadOptions};
use crate::error::WorkerError;
use crate::failure::{self, Failure};
use crate::reporter::Report;
use crate::step::TrainState;

impl Worker {
    /// Writes this rank's part of the checkpoint after `state.step` (rank 0 writes the model and
    /// trainer state, the ranks their optimizer state), in the background after a copy to host
    /// memory.
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
        let sharded = state.shard.is_some();
        if joined.rank != 0 && !sharded {
            self.reporter.send(Report::Done(done(Vec::new())));
            return Ok(());
        }
        self.control.set_phase(pb::WorkerPhase::Checkpointing);
        // At most one checkpoint of this rank uploads at a time: memory holds one host copy.
        self.finish_upload();
        let begin =
            self.runtime
                .block_on(self.client.checkpoint_begin(pb::CheckpointBeginRequest {
                    worker_id: self.id.clone(),
                    generation: g,
                    step,
                }))?;
        let rank0 = joined.rank == 0;
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
        let snapshot = checkpoint::snapshot(
            rank0.then_some(&state.model),
            rank0.then_some(&trainer),
            &state.layout,
            &state.adamw,
            sharded.then_some((joined.rank, joined.world)),
        )?;
        let (root, folder) = split_folder(&begin.prefix)?;
        let store = DatasetStore::open_durable(root, StoreConfig::default())?;
        let path = store.root().clone().join(folder);
        let reporter = self.reporter.clone();
        let control = self.control.clone();
        let client = self.client.clone();
        let id = self.id.clone();
        let request = done(Vec::new());
        let options = UploadOptions::default();
        let task = self.runtime.spawn(async move {
            let uploaded = match fail_point_upload(step) {
                Ok(()) => snapshot.upload(store.inner().clone(), path, options).await,
                Err(e) => Err(e),
            };
            match uploaded {
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
                    let f = Failure::new(
                        pb::FailureKind::CheckpointUpload,
                        format!("uploading checkpoint {step}: {e}"),
                    );
                    failure::report(&client, &control, &id, g, f).await;
                }
            }
        });
        *self.upload.lock().unwrap_or_else(|e| e.into_inner()) = Some((g, task));
        self.control.set_phase(pb::WorkerPhase::Training);
        Ok(())
    }

    /// Waits for this rank's checkpoint upload in flight, if any.
    fn finish_upload(&self) {
        let pending = self.upload.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((_, task)) = pending {
            let _ = self.runtime.block_on(task);
        }
    }

    /// Cancels the upload of generation `g` (it ended: its checkpoint can no longer commit).
    pub(super) fn cancel_upload(&self, g: u64) {
        let mut slot = self.upload.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(of, _)| *of == g)
            && let Some((_, task)) = slot.take()
        {
            task.abort();
        }
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
            if self.reporter.committed() >= total {
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

/// Failpoint `checkpoint-upload` (tests, `--features failpoints`): `return(S)` fails the upload
/// of step `S` (`return`: of every step), `sleep(ms)` delays it.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn fail_point_upload(step: u64) -> Result<(), CheckpointError> {
    fail::fail_point!("checkpoint-upload", |arg: Option<String>| {
        if arg.is_none_or(|s| s == step.to_string()) {
            Err(CheckpointError::Corrupt {
                path: format!("checkpoint {step}"),
                reason: "failpoint checkpoint-upload".into(),
            })
        } else {
            Ok(())
        }
    });
    Ok(())
}
