//! Phase 4 of a generation: the training loop. Each step reads its batch from the input pipeline,
//! runs the data-parallel step, reports progress and metrics, records its samples for the audit,
//! and checkpoints where the coordinator's policy says.

use std::time::Instant;

use fourm_collective::Collective;
use fourm_data::{LoaderConfig, StepLoader};
use fourm_model::StepOptions;
use fourm_plan::RankStream;
use fourm_proto::v1 as pb;

use super::{GenerationEnd, Joined, Worker};
use crate::audit::AuditRecord;
use crate::error::WorkerError;
use crate::metrics::{MetricsLine, StepReport, step_flops};
use crate::pipeline::{PipelineError, Prefetcher, PreparedBatch};
use crate::reporter::Report;
use crate::setup::DataSetup;
use crate::step::{StepError, StepResult, TrainState};

impl Worker {
    /// Phase 4: trains until the job's last step (`None`) or the generation's end.
    pub(super) fn train(
        &self,
        joined: &Joined,
        state: &mut TrainState,
        collective: &mut dyn Collective,
    ) -> Result<Option<GenerationEnd>, WorkerError> {
        let cfg = &self.config;
        let mut inputs = self.start_inputs(joined)?;
        let options = StepOptions {
            loss: cfg.train.loss,
            precision: cfg.train.precision_on(cfg.worker.device),
            ..StepOptions::new(cfg.data.input_tokens, cfg.data.target_tokens)
        };
        let cost = StepCost {
            model: cfg.model.build()?,
            mean_vocab: mean_target_vocab(&self.data),
        };
        self.control.set_phase(pb::WorkerPhase::Training);
        tracing::info!(
            precision = %options.precision,
            collective = collective.implementation(),
            device_memory = ?collective.device_memory(),
            "training"
        );
        let mut warned_host_copy = false;
        while state.step < joined.total_steps {
            if let Some(reason) = self.control.aborted() {
                return Ok(Some(GenerationEnd::Aborted(reason)));
            }
            let t0 = Instant::now();
            let (prepared, waited) = match inputs.next_batch(|| self.control.aborted()) {
                Ok(next) => next,
                Err(PipelineError::Aborted(reason)) => {
                    return Ok(Some(GenerationEnd::Aborted(reason)));
                }
                Err(e) => return Err(e.into()),
            };
            // Tests slow a job down here (`FAILPOINTS=train-step=sleep(ms)`).
            fail::fail_point!("train-step");
            let vote = joined.rank == 0 && self.control.take_checkpoint_request();
            let result = match state.step(&prepared.batch, &options, collective, vote) {
                Ok(r) => r,
                Err(StepError::Collective(e)) => {
                    return Ok(Some(self.collective_failed(joined.generation, &e)));
                }
                Err(e) => return Err(e.into()),
            };
            if result.host_elements > 0 && !warned_host_copy {
                warned_host_copy = true;
                tracing::warn!(
                    elements = result.host_elements,
                    collective = collective.implementation(),
                    "the gradient goes through host memory every step (the collective cannot \
                     reach the device's buffers)"
                );
            }
            self.control
                .step
                .store(state.step, std::sync::atomic::Ordering::SeqCst);
            let mut report = self.step_report(state.step, &result, &prepared, &cost, t0, waited);
            if self.validation_due(joined, state.step) {
                report.eval = self.validate(joined, state, collective)?;
            }
            self.after_step(joined, state, prepared, &report)?;
            let every = joined.checkpoint_every;
            if (every > 0 && state.step.is_multiple_of(every))
                || state.step == joined.total_steps
                || result.checkpoint_requested
            {
                self.checkpoint(joined, state)?;
            }
        }
        Ok(None)
    }

    fn validation_due(&self, joined: &Joined, step: u64) -> bool {
        let every = self.config.eval.every;
        self.validation.is_some()
            && every > 0
            && (step.is_multiple_of(every) || step == joined.total_steps)
    }

    /// Every rank evaluates its share of the held-out split; the collective adds the shares.
    fn validate(
        &self,
        joined: &Joined,
        state: &TrainState,
        collective: &mut dyn Collective,
    ) -> Result<Vec<(String, f64)>, WorkerError> {
        let Some(validation) = &self.validation else {
            return Ok(Vec::new());
        };
        let started = Instant::now();
        let metrics = validation.run(
            &state.model,
            &self.data.builder()?,
            &self.data.specials(),
            joined.rank as usize,
            joined.world as usize,
            collective,
        )?;
        tracing::debug!(
            step = state.step,
            seconds = started.elapsed().as_secs_f64(),
            "validation done"
        );
        Ok(metrics)
    }

    /// The input pipeline of this rank: its stream from the generation's cursor, read ahead.
    fn start_inputs(&self, joined: &Joined) -> Result<Prefetcher, WorkerError> {
        let cfg = &self.config;
        let stream = RankStream::new(
            &joined.plan,
            &joined.assignment,
            joined.rank,
            cfg.data.mix,
            &joined.cursor,
        );
        let loader = StepLoader::new(
            self.data.reader.clone(),
            LoaderConfig {
                shards_in_flight: cfg.data.shards_in_flight,
                ..LoaderConfig::default()
            },
            self.runtime.clone(),
        )?;
        Ok(Prefetcher::start(
            loader,
            stream,
            self.data.builder()?,
            cfg.train.rank_samples(joined.world, joined.rank),
            2,
        ))
    }

    fn step_report(
        &self,
        step: u64,
        result: &StepResult,
        prepared: &PreparedBatch,
        cost: &StepCost,
        t0: Instant,
        waited: std::time::Duration,
    ) -> StepReport {
        let cfg = &self.config;
        let tokens = cfg.data.input_tokens + cfg.data.target_tokens;
        StepReport {
            eval: Vec::new(),
            step,
            loss: result.loss,
            modality_loss: result.modality_loss.iter().cloned().collect(),
            grad_norm: result.grad_norm,
            lr: result.lr,
            elapsed: t0.elapsed(),
            data_wait: waited,
            tokens: prepared.batch.batch_size * tokens,
            flops: step_flops(
                &cost.model,
                prepared.batch.batch_size,
                cfg.data.input_tokens,
                cfg.data.target_tokens,
                cost.mean_vocab,
            ),
        }
    }

    /// The audit record (first: a reported step always has one), progress to the coordinator,
    /// the log line and the metrics file.
    fn after_step(
        &self,
        joined: &Joined,
        state: &TrainState,
        prepared: PreparedBatch,
        report: &StepReport,
    ) -> Result<(), WorkerError> {
        let cfg = &self.config;
        let (g, rank, step) = (joined.generation, joined.rank, state.step);
        if let Some(audit) = &self.audit {
            let record = AuditRecord {
                generation: g,
                from: joined.restore.as_ref().map_or(0, |r| r.step),
                rank,
                step,
                samples: prepared.keys,
                skipped: prepared.skipped,
            };
            audit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(&record)
                .map_err(|e| WorkerError::io("writing the sample audit", e))?;
        }
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
            metrics: Some(report.to_proto(self.peak_flops)),
            quarantined: prepared
                .quarantined
                .into_iter()
                .map(|q| pb::QuarantinedShard {
                    epoch: q.epoch,
                    shard: q.shard,
                    samples: q.samples,
                    reason: q.reason,
                })
                .collect(),
        }));
        if rank == 0 && (step.is_multiple_of(cfg.metrics.log_every) || step == joined.total_steps) {
            report.log(self.peak_flops);
        }
        if let Some(path) = &cfg.metrics.metrics_file {
            let mut line = MetricsLine::new(g, rank, joined.world, report);
            if cfg.metrics.param_digest {
                line.params_sha256 = Some(state.param_digest()?);
            }
            line.append(path)
                .map_err(|e| WorkerError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }
}

/// What the FLOP estimate of a step needs.
struct StepCost {
    model: fourm_model::FourMConfig,
    mean_vocab: usize,
}

fn mean_target_vocab(data: &DataSetup) -> usize {
    let v: Vec<usize> = data.modalities.targets().map(|s| s.vocab_size).collect();
    v.iter().sum::<usize>() / v.len().max(1)
}
