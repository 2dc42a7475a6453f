//! The gRPC service: a thin adapter that turns requests into state-machine events (stamped with
//! the time), writes what the state machine decides to commit, and streams generation changes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fourm_plan::CursorState;
use fourm_proto::v1 as pb;
use fourm_proto::v1::coordinator_server::Coordinator;
use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use crate::StateError;
use crate::manifest::{ManifestFile, Quarantined};
pub use crate::shared::Shared;
use crate::state::{EventState, GenerationEvent, Instruction, Progress, StepMetrics, WorkerInfo};

/// The `fourm.v1.Coordinator` service.
#[derive(Clone)]
pub struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn event_to_pb(e: &GenerationEvent) -> pb::GenerationEvent {
    let state = match e.state {
        EventState::Waiting => pb::GenerationState::Waiting,
        EventState::Running => pb::GenerationState::Running,
        EventState::Ended => pb::GenerationState::Ended,
        EventState::Finished => pb::GenerationState::Finished,
        EventState::Failed => pb::GenerationState::Failed,
    };
    pb::GenerationEvent {
        generation: e.generation,
        state: state as i32,
        members: e.members.clone(),
        reason: e.reason.clone(),
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::GenerationEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let req = request.into_inner();
        let w = req
            .worker
            .ok_or_else(|| Status::invalid_argument("missing `worker`"))?;
        let info = WorkerInfo {
            worker_id: w.worker_id,
            collective_address: w.collective_address,
            device: w.device,
            config_digest: w.config_digest,
        };
        tracing::info!(worker = %info.worker_id, device = %info.device, version = %req.version, "worker registered");
        self.shared.with(|s, now| {
            s.register(info, now)?;
            Ok(Response::new(pb::RegisterReply {
                job_id: s.config().job_id.clone(),
                heartbeat_interval_ms: s.config().heartbeat_interval_ms as u32,
                heartbeat_timeout_ms: s.config().heartbeat_timeout_ms as u32,
                current_generation: s.generation_id(),
            }))
        })
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let req = request.into_inner();
        let reply = self.shared.with(|s, now| {
            let instruction = s.heartbeat(&req.worker_id, req.generation, req.step, now);
            let generation = s.generation_id();
            let (kind, checkpoint_step, reason) = match instruction {
                Instruction::Continue => (pb::Instruction::Continue, 0, String::new()),
                Instruction::AbortCollective(r) => (pb::Instruction::AbortCollective, 0, r),
                Instruction::Checkpoint(step) => (
                    pb::Instruction::Checkpoint,
                    step,
                    "checkpoint requested".into(),
                ),
                Instruction::ShutDown => (pb::Instruction::ShutDown, 0, "job finished".into()),
                Instruction::Join(_) => (pb::Instruction::Join, 0, "generation formed".into()),
                Instruction::Register => (pb::Instruction::Register, 0, "unknown worker".into()),
                Instruction::Fail(r) => (pb::Instruction::Fail, 0, r),
            };
            pb::HeartbeatReply {
                instruction: kind as i32,
                generation,
                checkpoint_step,
                reason,
            }
        });
        Ok(Response::new(reply))
    }

    type WatchGenerationStream = EventStream;

    async fn watch_generation(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let rx = self.shared.events.subscribe();
        let current = {
            let s = self.shared.lock();
            let st = s.status();
            let members = match s.phase() {
                crate::state::Phase::Running(g) => g.members.clone(),
                _ => Vec::new(),
            };
            GenerationEvent {
                generation: st.generation,
                members,
                state: st.state,
                reason: st.last_change,
            }
        };
        let first = tokio_stream::once(Ok(event_to_pb(&current)));
        let rest = BroadcastStream::new(rx).filter_map(|e| e.ok().map(|e| Ok(event_to_pb(&e))));
        Ok(Response::new(Box::pin(first.chain(rest))))
    }

    async fn rendezvous(
        &self,
        request: Request<pb::RendezvousRequest>,
    ) -> Result<Response<pb::RendezvousReply>, Status> {
        let req = request.into_inner();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(req.wait_ms.min(60_000)));
        let mut publish = (!req.nccl_unique_id.is_empty()).then_some(req.nccl_unique_id);
        loop {
            let notified = self.shared.nccl_published.notified();
            let published = publish.is_some();
            let info = self
                .shared
                .with(|s, _| s.rendezvous(&req.worker_id, req.generation, publish.take()))?;
            if published {
                self.shared.nccl_published.notify_waiters();
            }
            let waiting = info.nccl_id.is_none() && info.rank != 0 && req.wait_ms > 0;
            if !waiting || tokio::time::timeout_at(deadline, notified).await.is_err() {
                let (every, total) = {
                    let s = self.shared.lock();
                    (s.config().checkpoint_every, s.config().total_steps)
                };
                return Ok(Response::new(pb::RendezvousReply {
                    generation: info.generation,
                    rank: info.rank,
                    world_size: info.peers.len() as u32,
                    peers: info
                        .peers
                        .iter()
                        .enumerate()
                        .map(|(r, (id, addr))| pb::Peer {
                            rank: r as u32,
                            worker_id: id.clone(),
                            collective_address: addr.clone(),
                        })
                        .collect(),
                    nccl_unique_id: info.nccl_id.unwrap_or_default(),
                    restore: info.restore.map(|r| pb::RestorePoint {
                        step: r.step,
                        prefix: self.folder_url(&r.folder),
                    }),
                    checkpoint_every: every,
                    total_steps: total,
                }));
            }
        }
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        let req = request.into_inner();
        let s = self.shared.lock();
        let info = s.lease(&req.worker_id, req.generation, req.count.min(1024) as usize)?;
        Ok(Response::new(pb::LeaseReply {
            assignment: Some(pb::Assignment {
                world_size: info.assignment.world_size,
                carried: info.assignment.carried.clone(),
                base: info.assignment.base,
            }),
            cursor: Some(cursor_to_pb(&info.start.to_state(s.plan()))),
            seed: s.plan().seed(),
            upcoming: info
                .upcoming
                .iter()
                .map(|u| pb::ShardLease {
                    entry: u.entry,
                    epoch: u.epoch,
                    shard: u.shard,
                    start: u.start,
                })
                .collect(),
        }))
    }

    async fn report_progress(
        &self,
        request: Request<pb::ProgressRequest>,
    ) -> Result<Response<pb::ProgressReply>, Status> {
        let req = request.into_inner();
        let report = Progress {
            entries: req.entries.iter().map(|e| (e.entry, e.consumed)).collect(),
            metrics: req.metrics.map(|m| StepMetrics {
                loss: m.loss,
                modality_loss: m.modality_loss.into_iter().collect(),
                tokens_per_s: m.tokens_per_s,
                mfu: m.mfu,
                data_wait: m.data_wait,
                eval: m.eval.into_iter().collect(),
            }),
            quarantined: req
                .quarantined
                .into_iter()
                .map(quarantined_from_pb)
                .collect(),
        };
        self.shared.with(|s, now| {
            s.progress(&req.worker_id, req.generation, req.step, report, now)?;
            Ok(Response::new(pb::ProgressReply {
                committed_step: s.committed().map_or(0, |c| c.step),
            }))
        })
    }

    async fn checkpoint_begin(
        &self,
        request: Request<pb::CheckpointBeginRequest>,
    ) -> Result<Response<pb::CheckpointBeginReply>, Status> {
        let req = request.into_inner();
        let folder = self
            .shared
            .with(|s, _| s.checkpoint_begin(&req.worker_id, req.generation, req.step))?;
        tracing::info!(step = req.step, folder = %folder, "checkpoint begun");
        Ok(Response::new(pb::CheckpointBeginReply {
            prefix: self.folder_url(&folder),
        }))
    }

    async fn checkpoint_done(
        &self,
        request: Request<pb::CheckpointDoneRequest>,
    ) -> Result<Response<pb::CheckpointDoneReply>, Status> {
        let req = request.into_inner();
        let files = req
            .files
            .into_iter()
            .map(|f| ManifestFile {
                name: f.name,
                size: f.size,
                sha256: f.sha256,
            })
            .collect();
        let manifest = self.shared.with(|s, now| {
            s.checkpoint_done(&req.worker_id, req.generation, req.step, files, now)
        })?;
        let Some(manifest) = manifest else {
            return Ok(Response::new(pb::CheckpointDoneReply { committed: false }));
        };
        let step = manifest.step;
        self.shared
            .commit(manifest)
            .await
            .map_err(|e| Status::aborted(format!("committing checkpoint {step}: {e}")))?;
        Ok(Response::new(pb::CheckpointDoneReply { committed: true }))
    }

    async fn request_checkpoint(
        &self,
        _request: Request<pb::RequestCheckpointRequest>,
    ) -> Result<Response<pb::RequestCheckpointReply>, Status> {
        let accepted = self.shared.with(|s, _| s.request_checkpoint());
        Ok(Response::new(pb::RequestCheckpointReply { accepted }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveReply>, Status> {
        let req = request.into_inner();
        tracing::info!(worker = %req.worker_id, reason = %req.reason, "worker left");
        self.shared
            .with(|s, now| s.leave(&req.worker_id, &req.reason, now));
        Ok(Response::new(pb::LeaveReply {}))
    }

    async fn report_failure(
        &self,
        request: Request<pb::FailureRequest>,
    ) -> Result<Response<pb::FailureReply>, Status> {
        let req = request.into_inner();
        tracing::warn!(worker = %req.worker_id, generation = req.generation, kind = ?req.kind(), message = %req.message, "worker reported a failure");
        if req.kind() == pb::FailureKind::BadCheckpoint && !req.checkpoint.is_empty() {
            self.shared
                .lock()
                .check_member(&req.worker_id, req.generation)?;
            self.shared
                .checkpoint_bad(&req.checkpoint, &req.message)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        self.shared.with(|s, now| {
            match s.report_failure(&req.worker_id, req.generation, &req.message, now) {
                // The generation already ended (another rank reported first, a fall-back): fine.
                Err(StateError::StaleGeneration { .. }) => Ok(()),
                other => other,
            }
        })?;
        Ok(Response::new(pb::FailureReply {}))
    }

    async fn job_status(
        &self,
        _request: Request<pb::JobStatusRequest>,
    ) -> Result<Response<pb::JobStatusReply>, Status> {
        let st = self.shared.lock().status();
        let state = event_to_pb(&GenerationEvent {
            generation: 0,
            members: Vec::new(),
            state: st.state,
            reason: String::new(),
        })
        .state;
        Ok(Response::new(pb::JobStatusReply {
            job_id: st.job_id,
            generation: st.generation,
            state,
            world_size: st.world_size,
            step: st.metrics.step,
            committed_step: st.committed_step,
            workers_alive: st.workers_alive,
            restarts: st.generations_formed,
            last_change: st.last_change,
            failure: st.failure.unwrap_or_default(),
            quarantined: st.quarantined.into_iter().map(quarantined_to_pb).collect(),
        }))
    }
}

impl CoordinatorService {
    fn folder_url(&self, folder: &str) -> String {
        format!(
            "{}/{folder}",
            self.shared.checkpoint_url.trim_end_matches('/')
        )
    }
}

fn cursor_to_pb(c: &CursorState) -> pb::DataCursor {
    pb::DataCursor {
        seed: c.seed,
        done_below: c.done_below,
        started: c
            .started
            .iter()
            .map(|e| pb::CursorEntry {
                entry: e.entry,
                epoch: e.epoch,
                shard: e.shard,
                consumed: e.consumed,
            })
            .collect(),
    }
}

fn quarantined_from_pb(q: pb::QuarantinedShard) -> Quarantined {
    Quarantined {
        epoch: q.epoch,
        shard: q.shard,
        samples: q.samples,
        reason: q.reason,
    }
}

fn quarantined_to_pb(q: Quarantined) -> pb::QuarantinedShard {
    pb::QuarantinedShard {
        epoch: q.epoch,
        shard: q.shard,
        samples: q.samples,
        reason: q.reason,
    }
}
