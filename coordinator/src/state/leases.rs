//! Leases and progress: the entries each rank reads, from the cursor its generation started at,
//! and the consumed prefixes it reports after every step.

use fourm_plan::RankStream;

use super::StateMachine;
use super::metrics::StepMetrics;
use super::types::{LeaseInfo, UpcomingShard};
use crate::error::StateError;
use crate::manifest::Quarantined;

impl StateMachine {
    /// The data of a rank: assignment, start cursor, next `count` shards.
    pub fn lease(
        &self,
        worker: &str,
        generation: u64,
        count: usize,
    ) -> Result<LeaseInfo, StateError> {
        let (g, rank) = self.member(worker, generation)?;
        let stream = RankStream::new(&self.plan, &g.assignment, rank, 1, &g.start);
        let upcoming = stream
            .upcoming(count)
            .into_iter()
            .map(|e| UpcomingShard {
                entry: e.index,
                epoch: e.epoch,
                shard: e.shard,
                start: g.start.consumed(&self.plan, e.index),
            })
            .collect();
        Ok(LeaseInfo {
            assignment: g.assignment.clone(),
            start: g.start.clone(),
            upcoming,
        })
    }

    /// Progress of a rank after `step`: consumed prefixes, metrics, and the shards it found bad
    /// (their samples are among the consumed ones, untrained).
    pub fn progress(
        &mut self,
        worker: &str,
        generation: u64,
        step: u64,
        report: Progress,
        now: u64,
    ) -> Result<(), StateError> {
        let Progress {
            entries,
            metrics,
            quarantined,
        } = report;
        let plan = self.plan.clone();
        let (g, rank) = self.member_mut(worker, generation)?;
        g.record_progress(&plan, rank, step, &entries)
            .map_err(|reason| StateError::BadProgress {
                worker: worker.into(),
                reason,
            })?;
        let world = g.world_size() as usize;
        self.metrics.record(rank, world, step, metrics);
        if let Some(w) = self.workers.get_mut(worker)
            && step > w.step
        {
            w.step = step;
            w.advanced_at = now;
        }
        self.note_step(step, now);
        for q in quarantined {
            tracing::warn!(epoch = q.epoch, shard = q.shard, samples = q.samples, reason = %q.reason, "shard quarantined");
            self.quarantined.insert((q.epoch, q.shard), q);
        }
        Ok(())
    }
}

/// What a rank reports after a step.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// `(entry, consumed prefix)` of the entries it read.
    pub entries: Vec<(u64, u64)>,
    /// Its metrics of the step.
    pub metrics: Option<StepMetrics>,
    /// Shards it found bad while reading the step.
    pub quarantined: Vec<Quarantined>,
}
