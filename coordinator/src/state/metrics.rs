//! What the ranks report after each step (loss, per-modality loss, throughput), aggregated for
//! `/status`, `/metrics` and `JobStatus`.

use std::collections::BTreeMap;

use super::StateMachine;
use super::types::{EventState, Phase, Status};

/// Metrics of the job as reported by the ranks.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    /// Highest step reported.
    pub step: u64,
    /// Loss reported by rank 0 for its last step.
    pub loss: f64,
    /// Per-modality loss reported by rank 0.
    pub modality_loss: BTreeMap<String, f64>,
    /// Sum over ranks of their last tokens/s.
    pub tokens_per_s: f64,
    /// Rank 0's MFU estimate.
    pub mfu: f64,
    /// Rank 0's data-wait fraction.
    pub data_wait: f64,
    /// The latest validation metrics (held-out split), and the step they are of.
    pub eval: BTreeMap<String, f64>,
    /// Step of `eval`.
    pub eval_step: u64,
    per_rank_tokens: Vec<f64>,
}

/// One rank's metrics for a step.
#[derive(Debug, Clone, Default)]
pub struct StepMetrics {
    /// Total loss.
    pub loss: f64,
    /// Loss per modality.
    pub modality_loss: BTreeMap<String, f64>,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// MFU estimate.
    pub mfu: f64,
    /// Data-wait fraction.
    pub data_wait: f64,
    /// Validation metrics, when the step evaluated the held-out split.
    pub eval: BTreeMap<String, f64>,
}

impl JobMetrics {
    /// Records rank `rank`'s metrics of `step` in a generation of `world` ranks.
    pub(super) fn record(&mut self, rank: u32, world: usize, step: u64, m: Option<StepMetrics>) {
        if let Some(m) = m {
            self.per_rank_tokens.resize(world, 0.0);
            self.per_rank_tokens[rank as usize] = m.tokens_per_s;
            self.tokens_per_s = self.per_rank_tokens.iter().sum();
            if rank == 0 {
                self.loss = m.loss;
                self.modality_loss = m.modality_loss;
                self.mfu = m.mfu;
                self.data_wait = m.data_wait;
                if !m.eval.is_empty() {
                    self.eval = m.eval;
                    self.eval_step = step;
                }
            }
        }
        self.step = self.step.max(step);
    }
}

impl StateMachine {
    /// A snapshot of the job.
    pub fn status(&self) -> Status {
        let (generation, state, world, leases) = match &self.phase {
            Phase::Running(g) => (
                g.id,
                EventState::Running,
                g.world_size(),
                g.open_entries(&self.plan) as u64,
            ),
            Phase::Waiting { .. } => (0, EventState::Waiting, 0, 0),
            Phase::Finished => (0, EventState::Finished, 0, 0),
            Phase::Failed(_) => (0, EventState::Failed, 0, 0),
        };
        Status {
            job_id: self.config.job_id.clone(),
            generation,
            state,
            world_size: world,
            committed_step: self.committed.as_ref().map_or(0, |c| c.step),
            committed_at: self.committed.as_ref().map(|c| c.at),
            workers_alive: self.workers.len() as u32,
            generations_formed: self.generations_formed,
            leases_outstanding: leases,
            last_change: self.last_change.clone(),
            metrics: self.metrics.clone(),
            failure: self.failure().map(str::to_string),
            quarantined: self.quarantined.values().cloned().collect(),
        }
    }
}
