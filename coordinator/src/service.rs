//! The gRPC service: a thin adapter that turns requests into state-machine events (stamped with
//! the time), writes what the state machine decides to commit, and streams generation changes.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fourm_plan::CursorState;
use fourm_proto::v1 as pb;
use fourm_proto::v1::coordinator_server::Coordinator;
use futures::Stream;
use tokio::sync::{Notify, broadcast};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use crate::durable::Durable;
use crate::manifest::ManifestFile;
use crate::state::{
    EventState, GenerationEvent, Instruction, StateMachine, StepMetrics, WorkerInfo,
};

/// State shared by the service, the ticker and the HTTP endpoints.
pub struct Shared {
    state: Mutex<StateMachine>,
    durable: Durable,
    checkpoint_url: String,
    started: Instant,
    events: broadcast::Sender<GenerationEvent>,
    nccl_published: Notify,
}

impl Shared {
    /// Wraps a state machine.
    pub fn new(state: StateMachine, durable: Durable, checkpoint_url: String) -> Arc<Self> {
        let (events, _) = broadcast::channel(256);
        Arc::new(Self {
            state: Mutex::new(state),
            durable,
            checkpoint_url,
            started: Instant::now(),
            events,
            nccl_published: Notify::new(),
        })
    }

    /// Milliseconds since the coordinator started (the state machine's clock).
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Locks the state machine.
    pub fn lock(&self) -> MutexGuard<'_, StateMachine> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the generation changes the state machine produced.
    fn publish(&self, state: &mut StateMachine) {
        for event in state.take_events() {
            tracing::info!(generation = event.generation, state = ?event.state, reason = %event.reason, "generation change");
            let _ = self.events.send(event);
        }
    }

    /// Advances the clock: lost workers, generation formation.
    pub fn tick(&self) {
        let now = self.now();
        let mut state = self.lock();
        state.tick(now);
        self.publish(&mut state);
    }

    /// Runs `f` on the state machine and publishes what changed.
    fn with<R>(&self, f: impl FnOnce(&mut StateMachine, u64) -> R) -> R {
        let now = self.now();
        let mut state = self.lock();
        let r = f(&mut state, now);
        self.publish(&mut state);
        r
    }

    /// Durable storage.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }
}

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
        let entries: Vec<(u64, u64)> = req.entries.iter().map(|e| (e.entry, e.consumed)).collect();
        let metrics = req.metrics.map(|m| StepMetrics {
            loss: m.loss,
            modality_loss: m.modality_loss.into_iter().collect(),
            tokens_per_s: m.tokens_per_s,
            mfu: m.mfu,
            data_wait: m.data_wait,
        });
        self.shared.with(|s, _| {
            s.progress(&req.worker_id, req.generation, req.step, &entries, metrics)?;
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
        if let Err(e) = self.shared.durable.commit(&manifest).await {
            tracing::error!(step = manifest.step, error = %e, "checkpoint commit failed");
            self.shared.with(|s, _| s.checkpoint_failed(manifest.step));
            return Err(Status::unavailable(format!(
                "committing checkpoint {}: {e}",
                manifest.step
            )));
        }
        let removed = self
            .shared
            .with(|s, now| s.checkpoint_committed(&manifest, now))?;
        tracing::info!(
            step = manifest.step,
            generation = manifest.generation,
            "checkpoint committed"
        );
        let durable = self.shared.durable.clone();
        let step = manifest.step;
        tokio::spawn(async move {
            for folder in removed {
                if let Err(e) = durable.delete_folder(&folder).await {
                    tracing::warn!(folder = %folder, error = %e, "cannot delete old checkpoint");
                }
            }
            if let Err(e) = durable.collect_garbage(Some(step)).await {
                tracing::warn!(error = %e, "checkpoint garbage collection failed");
            }
        });
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

    async fn report_collective_error(
        &self,
        request: Request<pb::CollectiveErrorRequest>,
    ) -> Result<Response<pb::CollectiveErrorReply>, Status> {
        let req = request.into_inner();
        self.shared
            .with(|s, now| s.collective_error(&req.worker_id, req.generation, &req.message, now))?;
        Ok(Response::new(pb::CollectiveErrorReply {}))
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
