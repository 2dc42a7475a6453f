//! Progress and checkpoint acknowledgements, sent in order by one task (the coordinator requires
//! a rank's progress through a step before its acknowledgement of that step's checkpoint), while
//! training goes on.

use std::sync::Arc;

use fourm_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::client::Client;
use crate::control::Control;
use crate::failure::{self, Failure};

/// What the reporter sends.
#[derive(Debug)]
pub enum Report {
    /// Consumed prefixes and metrics after a step.
    Progress(pb::ProgressRequest),
    /// This rank's part of a checkpoint is written.
    Done(pb::CheckpointDoneRequest),
}

/// Handle to the reporter task.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Report>,
    committed: Arc<watch::Sender<u64>>,
}

impl Reporter {
    /// Starts the task on the current runtime.
    pub fn start(client: Client, control: Arc<Control>, runtime: &tokio::runtime::Handle) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        let committed = Arc::new(watch::Sender::new(0));
        let seen = committed.clone();
        runtime.spawn(async move {
            while let Some(report) = rx.recv().await {
                let (worker, g) = match &report {
                    Report::Progress(r) => (r.worker_id.clone(), r.generation),
                    Report::Done(r) => (r.worker_id.clone(), r.generation),
                };
                let result = match report {
                    Report::Progress(req) => {
                        client.report_progress(req).await.map(|r| r.committed_step)
                    }
                    Report::Done(req) => {
                        let step = req.step;
                        client
                            .checkpoint_done(req)
                            .await
                            .map(|r| if r.committed { step } else { 0 })
                    }
                };
                match result {
                    Ok(step) => raise(&seen, step),
                    // A late report of an ended generation: it was refused as stale, and it
                    // must not touch the generation the worker is in now.
                    Err(e) if control.current() != g => {
                        tracing::debug!(generation = g, error = %e, "late report of an ended generation dropped");
                    }
                    Err(e) => {
                        let f = Failure::new(
                            pb::FailureKind::Other,
                            format!("coordinator refused a report: {e}"),
                        );
                        failure::report(&client, &control, &worker, g, f).await;
                    }
                }
            }
        });
        Self { tx, committed }
    }

    /// Queues a report.
    pub fn send(&self, report: Report) {
        let _ = self.tx.send(report);
    }

    /// Latest committed checkpoint step the coordinator reported.
    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Follows the committed step.
    pub fn watch_committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Sets the committed step (the checkpoint a generation restored).
    pub fn set_committed(&self, step: u64) {
        raise(&self.committed, step);
    }
}

/// Raises the committed step (never lowers it), waking its watchers.
fn raise(committed: &watch::Sender<u64>, step: u64) {
    committed.send_if_modified(|c| {
        let higher = step > *c;
        *c = (*c).max(step);
        higher
    });
}
