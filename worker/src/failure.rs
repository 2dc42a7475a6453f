//! Ending a generation from the worker's side. The coordinator is told first (so that every rank
//! learns at once, even when no collective is left to fail: the last step's wait for its commit,
//! a one-rank generation), then the generation is aborted here. A report that cannot be sent in
//! time does not hold the abort back: the coordinator then learns from the heartbeats.

use std::time::Duration;

use fourm_proto::v1 as pb;

use crate::client::Client;
use crate::control::Control;

/// How long a failure report may take before the worker aborts without it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Which kind of failure.
    pub kind: pb::FailureKind,
    /// What happened.
    pub message: String,
    /// For a checkpoint that failed verification: its folder.
    pub checkpoint: Option<String>,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: pb::FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            checkpoint: None,
        }
    }
}

/// Tells the coordinator that generation `g` failed on this worker, then aborts it here.
pub async fn report(client: &Client, control: &Control, worker_id: &str, g: u64, f: Failure) {
    tracing::warn!(generation = g, kind = ?f.kind, message = %f.message, "generation failed on this worker");
    let request = pb::FailureRequest {
        worker_id: worker_id.to_string(),
        generation: g,
        message: f.message.clone(),
        kind: f.kind as i32,
        checkpoint: f.checkpoint.unwrap_or_default(),
    };
    match tokio::time::timeout(REPORT_TIMEOUT, client.report_failure(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the coordinator refused the failure report"),
        Err(_) => tracing::warn!("no answer to the failure report; aborting anyway"),
    }
    control.abort_generation(g, &f.message);
}
