//! A worker's life: register, heartbeat, train in each generation it is asked to join, leave.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use burn::tensor::Device;
use fourm_proto::v1 as pb;

use crate::audit::Audit;
use crate::client::{Client, ClientError};
use crate::config::{DeviceKind, WorkerConfig};
use crate::control::Control;
use crate::error::WorkerError;
use crate::generation::{GenerationEnd, Worker};
use crate::heartbeat::heartbeat_loop;
use crate::reporter::Reporter;
use crate::setup::DataSetup;

/// Runs the worker until the job finishes or `control` is shut down (for example on SIGTERM).
pub async fn run(
    config: WorkerConfig,
    token: String,
    control: Arc<Control>,
    mut join: tokio::sync::watch::Receiver<u64>,
) -> Result<(), WorkerError> {
    config.validate()?;
    let id = config.worker.id.clone().unwrap_or_else(host_name);
    let listener = std::net::TcpListener::bind(config.worker.collective_listen).map_err(|e| {
        WorkerError::io(
            format!(
                "binding the collective on {}",
                config.worker.collective_listen
            ),
            e,
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| WorkerError::io("collective address", e))?;
    let advertise = config
        .worker
        .collective_advertise
        .clone()
        .unwrap_or_else(|| {
            if local.ip().is_unspecified() {
                format!("{}:{}", host_name(), local.port())
            } else {
                local.to_string()
            }
        });
    let ca = match &config.coordinator.tls_ca {
        Some(p) => Some(
            std::fs::read(p).map_err(|e| WorkerError::io(format!("reading {}", p.display()), e))?,
        ),
        None => None,
    };
    let client = Client::new(
        &config.coordinator.address,
        &token,
        ca.as_deref(),
        Duration::from_secs(600),
    )?;
    let data = DataSetup::open(&config).await?;
    // The masking configuration against the dataset's modalities: a mistake there is the same
    // on every try, so it stops this worker before it joins rather than failing each generation.
    data.builder()?;
    let device = device(&config)?;
    let peak_flops = peak_flops(&config);
    let validation = validation(&config).await?;
    let register = pb::RegisterRequest {
        worker: Some(pb::WorkerInfo {
            worker_id: id.clone(),
            collective_address: advertise.clone(),
            device: format!("{:?}:{}", config.worker.device, config.worker.device_index)
                .to_lowercase(),
            config_digest: config.digest(),
        }),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let reply = client.register(register.clone()).await?;
    tracing::info!(worker = %id, job = %reply.job_id, collective = %advertise, "registered");
    let interval = Duration::from_millis(u64::from(reply.heartbeat_interval_ms.max(20)));
    let heartbeats = tokio::spawn(heartbeat_loop(
        client.clone(),
        id.clone(),
        control.clone(),
        interval,
        register,
    ));
    let reporter = Reporter::start(
        client.clone(),
        control.clone(),
        &tokio::runtime::Handle::current(),
    );
    let audit = config
        .metrics
        .audit_samples
        .as_deref()
        .map(|p| Mutex::new(Audit::new(p)));
    let worker = Arc::new(Worker {
        config,
        id: id.clone(),
        client: client.clone(),
        control: control.clone(),
        data,
        listener,
        runtime: tokio::runtime::Handle::current(),
        device,
        reporter,
        audit,
        ring_key: ring_key(&token, &reply.job_id),
        peak_flops,
        validation,
        upload: Mutex::new(None),
    });

    let mut last = 0;
    let outcome = loop {
        let g = *join.borrow_and_update();
        if let Some(reason) = control.failure() {
            break Err(WorkerError::JobFailed(reason));
        }
        if control.is_shut_down() {
            break Ok(());
        }
        if g == 0 || g == last {
            if join.changed().await.is_err() {
                break Ok(());
            }
            continue;
        }
        last = g;
        let w = worker.clone();
        let end = tokio::task::spawn_blocking(move || w.run_generation(g)).await;
        control.leave();
        match end {
            Ok(Ok(GenerationEnd::Finished)) => {
                tracing::info!("job finished; waiting for the coordinator to confirm");
                loop {
                    let changed = control.changed();
                    if control.is_shut_down() {
                        break;
                    }
                    changed.await;
                }
                match control.failure() {
                    Some(reason) => break Err(WorkerError::JobFailed(reason)),
                    None => break Ok(()),
                }
            }
            Ok(Ok(GenerationEnd::Aborted(_))) if control.failure().is_some() => {
                break Err(WorkerError::JobFailed(
                    control.failure().unwrap_or_default(),
                ));
            }
            Ok(Ok(GenerationEnd::Aborted(_))) if control.is_shut_down() => {
                tracing::info!("the job is over; leaving");
                break Ok(());
            }
            Ok(Ok(GenerationEnd::Aborted(reason))) => {
                tracing::warn!(generation = g, reason = %reason, "generation aborted; rejoining")
            }
            Ok(Err(WorkerError::Client(e))) if stale_generation(&e) => {
                // The coordinator restarted or moved on: its generation is gone. The heartbeat
                // registers again and the next generation is joined.
                tracing::warn!(generation = g, error = %e, "generation refused; rejoining")
            }
            Ok(Err(e)) => break Err(e),
            Err(panic) => {
                break Err(WorkerError::setup(format!(
                    "training thread failed: {panic}"
                )));
            }
        }
    };
    let reason = match &outcome {
        Ok(()) => "done".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = client
        .leave(pb::LeaveRequest {
            worker_id: id,
            generation: 0,
            reason,
        })
        .await;
    heartbeats.abort();
    outcome
}

/// Whether the coordinator refused a call because this worker's generation (or registration) is
/// no longer current, rather than because the request was wrong.
fn stale_generation(e: &ClientError) -> bool {
    e.status().is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::Aborted
        )
    })
}

fn device(config: &WorkerConfig) -> Result<Device, WorkerError> {
    match config.worker.device {
        DeviceKind::Cpu => Ok(Device::flex().autodiff()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            let index = config.worker.device_index;
            let count = fourm_collective::NcclCollective::cuda_device_count()
                .map_err(|e| WorkerError::setup(format!("worker.device = \"cuda\": {e}")))?;
            if index >= count {
                return Err(WorkerError::setup(format!(
                    "worker.device_index = {index}, but this machine has {count} CUDA devices"
                )));
            }
            Ok(Device::cuda(index).autodiff())
        }
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(WorkerError::setup(
            "this worker was built without the `cuda` feature",
        )),
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// The ring's key: the job token, bound to the job id (a token shared by two jobs does not let
/// a rank of one into the other's ring).
fn ring_key(token: &str, job_id: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"fourm ring key\0");
    h.update(job_id.as_bytes());
    h.update(b"\0");
    h.update(token.as_bytes());
    h.finalize().to_vec()
}

/// The device's peak FLOP/s: configured, or known for the GPU it is; `None` on CPUs.
fn peak_flops(config: &WorkerConfig) -> Option<f64> {
    if let Some(tflops) = config.metrics.peak_tflops {
        return Some(tflops * 1e12);
    }
    match config.worker.device {
        DeviceKind::Cpu => None,
        DeviceKind::Cuda => crate::nccl::device_name(config.worker.device_index)
            .and_then(|name| fourm_model::bench::known_peak_tflops(&name))
            .map(|t| t * 1e12),
    }
}

/// The held-out split and its tasks, when `[eval]` asks for validation.
async fn validation(
    config: &WorkerConfig,
) -> Result<Option<crate::validation::Validation>, WorkerError> {
    let e = &config.eval;
    if e.every == 0 {
        return Ok(None);
    }
    let url = e
        .split
        .clone()
        .unwrap_or_else(|| format!("{}/val", config.data.dataset.trim_end_matches('/')));
    let store = fourm_data::DatasetStore::open(&url, fourm_data::StoreConfig::default())?;
    let set = fourm_eval::EvalSet::load(&store, e.samples).await?;
    let tasks = e
        .tasks
        .iter()
        .map(|t| t.parse().map_err(WorkerError::setup))
        .collect::<Result<Vec<fourm_eval::Task>, _>>()?;
    tracing::info!(split = %url, samples = set.samples.len(), tasks = ?e.tasks, "validation set loaded");
    let options = fourm_eval::RunOptions {
        batch: e.batch,
        steps: e.steps,
        seed: 0,
    };
    let step_options = fourm_model::StepOptions {
        loss: config.train.loss,
        ..fourm_model::StepOptions::new(config.data.input_tokens, config.data.target_tokens)
    };
    Ok(Some(crate::validation::Validation::new(
        set,
        tasks,
        options,
        step_options,
    )))
}
