//! One generation of a worker: rendezvous, data lease, collective, restore, then training steps
//! until the job's last step, an abort from the coordinator, or a collective failure.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use fourm_collective::{
    AbortHandle, Collective, CollectiveError, Rendezvous, RingCollective, RingConfig,
};
use fourm_data::{
    Assignment, Cursor, DatasetStore, LoaderConfig, RankStream, StepLoader, StoreConfig,
};
use fourm_model::StepOptions;
use fourm_model::optim::{AdamW, AdamWConfig, CosineSchedule, ParamLayout, scaled_lr};
use fourm_proto::v1 as pb;

use crate::audit::{Audit, AuditRecord};
use crate::checkpoint::{self, TrainerState};
use crate::client::Client;
use crate::config::{CollectiveKind, WorkerConfig};
use crate::control::Control;
use crate::error::WorkerError;
use crate::metrics::{MetricsLine, StepReport, step_flops};
use crate::pipeline::Prefetcher;
use crate::reporter::{Report, Reporter};
use crate::setup::DataSetup;
use crate::step::{StepError, TrainState};

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationEnd {
    /// The job's last step is committed.
    Finished,
    /// The generation ended early (a peer failed, the coordinator said so): rejoin.
    Aborted(String),
}

/// Everything a worker builds once and uses in every generation.
pub struct Worker {
    /// Configuration.
    pub config: WorkerConfig,
    /// Worker id.
    pub id: String,
    /// Coordinator client.
    pub client: Client,
    /// Instructions from the heartbeat task.
    pub control: Arc<Control>,
    /// Dataset, tokenizer, modalities, masking.
    pub data: DataSetup,
    /// The CPU collective's listener (bound once, reused by every generation).
    pub listener: std::net::TcpListener,
    /// The async runtime (RPCs, storage).
    pub runtime: tokio::runtime::Handle,
    /// Training device (with autodiff).
    pub device: Device,
    /// Ordered progress and checkpoint reports.
    pub reporter: Reporter,
    /// Sample audit.
    pub audit: Option<Mutex<Audit>>,
}

impl Worker {
    /// Runs generation `g` to its end.
    pub fn run_generation(&self, g: u64) -> Result<GenerationEnd, WorkerError> {
        let rt = &self.runtime;
        let cfg = &self.config;
        let rdv = rt.block_on(self.client.rendezvous(pb::RendezvousRequest {
            worker_id: self.id.clone(),
            generation: g,
            nccl_unique_id: Vec::new(),
            wait_ms: 0,
        }))?;
        let lease = rt.block_on(self.client.lease(pb::LeaseRequest {
            worker_id: self.id.clone(),
            generation: g,
            count: 0,
        }))?;
        let plan = self.data.plan(lease.seed)?;
        let a = lease
            .assignment
            .ok_or_else(|| WorkerError::setup("lease without an assignment"))?;
        let assignment = Assignment {
            world_size: a.world_size,
            carried: a.carried,
            base: a.base,
        };
        let cursor = Cursor::from_json(&plan, &lease.cursor_json)?;
        let (rank, world, total) = (rdv.rank, rdv.world_size, rdv.total_steps);
        tracing::info!(generation = g, rank, world, restore = ?rdv.restore.as_ref().map(|r| r.step), "joining generation");

        let abort = AbortHandle::new();
        self.control.enter(g, abort.clone());
        self.control.set_phase(pb::WorkerPhase::Starting);
        let peers = rdv
            .peers
            .iter()
            .map(|p| resolve(&p.collective_address))
            .collect::<Result<Vec<_>, _>>()?;
        let rendezvous = Rendezvous {
            generation: g,
            rank: rank as usize,
            peers,
        };
        let ring_config = RingConfig {
            connect_timeout: Duration::from_secs(30),
            ..RingConfig::default()
        };
        let connected = match cfg.worker.collective {
            CollectiveKind::Ring => {
                RingCollective::connect(&self.listener, &rendezvous, &ring_config, abort)
                    .map(|r| Box::new(r) as Box<dyn Collective>)
            }
            CollectiveKind::Nccl => crate::nccl::connect(self, g, rank, world, abort)?,
        };
        let mut collective = match connected {
            Ok(c) => c,
            Err(e) => return Ok(self.collective_failed(g, &e)),
        };

        let model_config = cfg.model.build()?;
        let mut model =
            model_config.init(&self.data.modalities, cfg.model.init_seed, &self.device)?;
        let layout = ParamLayout::new(&model);
        let schedule = CosineSchedule {
            lr: scaled_lr(cfg.train.blr, cfg.train.batch_size * world as usize),
            min_lr: cfg.train.min_lr,
            warmup_steps: cfg.train.warmup_steps,
            total_steps: total,
        };
        let adamw_config = AdamWConfig {
            betas: cfg.train.betas,
            eps: cfg.train.eps,
            weight_decay: cfg.train.weight_decay,
        };
        let plain = self.device.clone().inner();
        let (adamw, step) = match &rdv.restore {
            Some(point) => {
                let (root, folder) = split_folder(&point.prefix)?;
                let store = DatasetStore::open(root, StoreConfig::default())?;
                let path = store.root().clone().join(folder);
                let restored = rt.block_on(checkpoint::restore(
                    store.inner(),
                    &path,
                    &mut model,
                    &layout,
                    &plain,
                ))?;
                if restored.trainer.step != point.step
                    || restored.trainer.config_digest != cfg.digest()
                {
                    return Err(WorkerError::setup(format!(
                        "checkpoint {} holds step {} of configuration {}, expected step {} of {}",
                        point.prefix,
                        restored.trainer.step,
                        restored.trainer.config_digest,
                        point.step,
                        cfg.digest()
                    )));
                }
                let adamw = AdamW::from_state(
                    adamw_config,
                    &layout,
                    restored.exp_avg,
                    restored.exp_avg_sq,
                    restored.adamw_step,
                );
                (adamw, point.step)
            }
            None => (AdamW::new(adamw_config, &layout, &plain), 0),
        };
        self.reporter.set_committed(step);
        if let Some(audit) = &self.audit {
            audit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .discard_uncommitted();
        }
        let micro = match cfg.train.micro_batches {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut state = TrainState {
            model,
            layout,
            adamw,
            schedule,
            step,
            clip_grad: cfg.train.clip_grad,
            micro_batches: micro,
        };
        self.control
            .step
            .store(step, std::sync::atomic::Ordering::SeqCst);

        let stream = RankStream::new(&plan, &assignment, rank, cfg.data.mix, &cursor);
        let loader = StepLoader::new(
            self.data.reader.clone(),
            LoaderConfig {
                shards_in_flight: cfg.data.shards_in_flight,
            },
            rt.clone(),
        )?;
        let mut inputs = Prefetcher::start(
            loader,
            stream,
            self.data.builder()?,
            cfg.train.batch_size,
            2,
        );
        let options = StepOptions::new(cfg.data.input_tokens, cfg.data.target_tokens);
        let options = StepOptions {
            loss: cfg.train.loss,
            ..options
        };
        let mean_vocab = mean_target_vocab(&self.data);
        self.control.set_phase(pb::WorkerPhase::Training);

        while state.step < total {
            if let Some(reason) = self.control.aborted() {
                return Ok(GenerationEnd::Aborted(reason));
            }
            let t0 = Instant::now();
            let (prepared, waited) = inputs.next_batch()?;
            let vote = rank == 0 && self.control.take_checkpoint_request();
            let result = match state.step(&prepared.batch, &options, &mut *collective, vote) {
                Ok(r) => r,
                Err(StepError::Collective(e)) => return Ok(self.collective_failed(g, &e)),
                Err(e) => return Err(e.into()),
            };
            let step = state.step;
            self.control
                .step
                .store(step, std::sync::atomic::Ordering::SeqCst);
            let report = StepReport {
                step,
                loss: result.loss,
                modality_loss: result.modality_loss.into_iter().collect(),
                grad_norm: result.grad_norm,
                lr: result.lr,
                elapsed: t0.elapsed(),
                data_wait: waited,
                tokens: prepared.batch.batch_size
                    * (cfg.data.input_tokens + cfg.data.target_tokens),
                flops: step_flops(
                    &model_config,
                    prepared.batch.batch_size,
                    cfg.data.input_tokens,
                    cfg.data.target_tokens,
                    mean_vocab,
                ),
            };
            let entries = prepared
                .progress
                .iter()
                .map(|&(entry, consumed)| pb::EntryProgress { entry, consumed })
                .collect();
            self.reporter.send(Report::Progress(pb::ProgressRequest {
                worker_id: self.id.clone(),
                generation: g,
                step,
                entries,
                metrics: Some(report.to_proto(cfg.metrics.peak_flops)),
            }));
            if rank == 0 && (step.is_multiple_of(cfg.metrics.log_every) || step == total) {
                report.log(cfg.metrics.peak_flops);
            }
            if let Some(path) = &cfg.metrics.metrics_file {
                let mut line = MetricsLine::new(g, rank, world, &report);
                if cfg.metrics.param_digest {
                    line.params_sha256 = Some(state.param_digest()?);
                }
                line.append(path)
                    .map_err(|e| WorkerError::io(format!("writing {}", path.display()), e))?;
            }
            if let Some(audit) = &self.audit {
                let record = AuditRecord {
                    generation: g,
                    rank,
                    step,
                    samples: prepared.keys,
                };
                audit
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(record);
            }
            let every = rdv.checkpoint_every;
            if (every > 0 && step.is_multiple_of(every))
                || step == total
                || result.checkpoint_requested
            {
                self.checkpoint(g, rank, world, &state)?;
            }
            self.flush_audit()?;
        }
        // The last step's checkpoint must be committed before the job is done.
        loop {
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
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes this rank's part of the checkpoint after `state.step` (rank 0 writes the files, in
    /// the background after a copy to host memory).
    fn checkpoint(
        &self,
        g: u64,
        rank: u32,
        world: u32,
        state: &TrainState,
    ) -> Result<(), WorkerError> {
        let step = state.step;
        let done = |files: Vec<pb::CheckpointFile>| pb::CheckpointDoneRequest {
            worker_id: self.id.clone(),
            generation: g,
            step,
            files,
        };
        if rank != 0 {
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
            world_size: world,
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

    fn flush_audit(&self) -> Result<(), WorkerError> {
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

    /// The collective failed: tell the coordinator (unless it told us first) and rejoin.
    fn collective_failed(&self, g: u64, e: &CollectiveError) -> GenerationEnd {
        if let Some(reason) = self.control.aborted() {
            return GenerationEnd::Aborted(reason);
        }
        tracing::warn!(generation = g, error = %e, "collective failed");
        let report = pb::CollectiveErrorRequest {
            worker_id: self.id.clone(),
            generation: g,
            message: e.to_string(),
        };
        if let Err(err) = self
            .runtime
            .block_on(self.client.report_collective_error(report))
        {
            tracing::warn!(error = %err, "could not report the collective error");
        }
        GenerationEnd::Aborted(e.to_string())
    }
}

/// `scheme://…/<root>/step-N` → (`scheme://…/<root>`, `step-N`).
fn split_folder(prefix: &str) -> Result<(&str, &str), WorkerError> {
    prefix
        .rsplit_once('/')
        .filter(|(_, f)| !f.is_empty())
        .ok_or_else(|| WorkerError::setup(format!("bad checkpoint prefix `{prefix}`")))
}

fn resolve(address: &str) -> Result<SocketAddr, WorkerError> {
    address
        .to_socket_addrs()
        .map_err(|e| WorkerError::io(format!("resolving peer {address}"), e))?
        .next()
        .ok_or_else(|| WorkerError::setup(format!("peer address {address} resolves to nothing")))
}

fn mean_target_vocab(data: &DataSetup) -> usize {
    let v: Vec<usize> = data.modalities.targets().map(|s| s.vocab_size).collect();
    v.iter().sum::<usize>() / v.len().max(1)
}
