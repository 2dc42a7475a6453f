//! The HTTP side: Prometheus `/metrics` and a JSON `/status`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::service::Shared;
use crate::state::EventState;

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(shared)
}

fn state_name(s: EventState) -> &'static str {
    match s {
        EventState::Waiting => "waiting",
        EventState::Running => "running",
        EventState::Ended => "ended",
        EventState::Finished => "finished",
        EventState::Failed => "failed",
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let now = shared.now();
    let st = shared.lock().status();
    axum::Json(json!({
        "job_id": st.job_id,
        "generation": st.generation,
        "state": state_name(st.state),
        "world_size": st.world_size,
        "step": st.metrics.step,
        "committed_step": st.committed_step,
        "checkpoint_age_s": st.committed_at.map(|t| (now.saturating_sub(t)) as f64 / 1e3),
        "workers_alive": st.workers_alive,
        "generations_formed": st.generations_formed,
        "leases_outstanding": st.leases_outstanding,
        "loss": st.metrics.loss,
        "modality_loss": st.metrics.modality_loss,
        "tokens_per_s": st.metrics.tokens_per_s,
        "mfu": st.metrics.mfu,
        "data_wait": st.metrics.data_wait,
        "last_change": st.last_change,
        "eval": st.metrics.eval,
        "eval_step": st.metrics.eval_step,
        "failure": st.failure,
        "quarantined": st.quarantined,
        "samples_quarantined": st.quarantined.iter().map(|q| q.samples).sum::<u64>(),
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let now = shared.now();
    let st = shared.lock().status();
    let mut registry = Registry::with_prefix("fourm");
    let mut gauge = |name: &str, help: &str, value: f64| {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    gauge(
        "generation",
        "Current generation id (0 when none runs)",
        st.generation as f64,
    );
    gauge(
        "world_size",
        "Ranks of the running generation",
        f64::from(st.world_size),
    );
    gauge(
        "step",
        "Highest training step reported",
        st.metrics.step as f64,
    );
    gauge(
        "committed_step",
        "Step of the latest committed checkpoint",
        st.committed_step as f64,
    );
    gauge(
        "checkpoint_age_seconds",
        "Seconds since the latest checkpoint was committed (-1 if none)",
        st.committed_at
            .map_or(-1.0, |t| now.saturating_sub(t) as f64 / 1e3),
    );
    gauge(
        "tokens_per_second",
        "Training tokens per second over all ranks",
        st.metrics.tokens_per_s,
    );
    gauge(
        "loss",
        "Loss of the last step reported by rank 0",
        st.metrics.loss,
    );
    gauge(
        "mfu",
        "Model FLOPs utilisation estimate of rank 0",
        st.metrics.mfu,
    );
    gauge(
        "data_wait_ratio",
        "Fraction of rank 0's step spent waiting for data",
        st.metrics.data_wait,
    );
    gauge(
        "workers_alive",
        "Registered workers with recent heartbeats",
        f64::from(st.workers_alive),
    );
    gauge(
        "leases_outstanding",
        "Shards being read by the ranks",
        st.leases_outstanding as f64,
    );
    gauge(
        "generations_formed",
        "Generations formed since the coordinator started",
        st.generations_formed as f64,
    );
    gauge(
        "shards_quarantined",
        "Shards taken out of training because their data is bad",
        st.quarantined.len() as f64,
    );
    gauge(
        "samples_quarantined",
        "Samples of quarantined shards (counted as consumed, not trained on)",
        st.quarantined.iter().map(|q| q.samples).sum::<u64>() as f64,
    );
    gauge(
        "failed",
        "1 once the job has failed",
        if st.failure.is_some() { 1.0 } else { 0.0 },
    );
    let per_modality =
        Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (m, v) in &st.metrics.modality_loss {
        per_modality
            .get_or_create(&vec![("modality".to_string(), m.clone())])
            .set(*v);
    }
    registry.register(
        "modality_loss",
        "Per-modality loss of rank 0's last step",
        per_modality,
    );
    let eval = Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (m, v) in &st.metrics.eval {
        eval.get_or_create(&vec![("metric".to_string(), m.clone())])
            .set(*v);
    }
    registry.register(
        "eval",
        "Validation metrics on the held-out split (held_out/<modality> losses, <task>/<metric>)",
        eval,
    );
    let mut body = String::new();
    if encode(&mut body, &registry).is_err() {
        let _ = writeln!(body, "# encoding failed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
