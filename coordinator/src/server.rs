//! Putting the coordinator together: durable state, state machine, gRPC (with health, token,
//! size limits, optional TLS) and HTTP endpoints, until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fourm_plan::{Cursor, EpochPlan};
use fourm_proto::v1::coordinator_server::CoordinatorServer;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::TokenCheck;
use crate::config::CoordinatorConfig;
use crate::durable::{Durable, DurableError, JobSpec};
use crate::error::StateError;
use crate::manifest::Manifest;
use crate::service::{CoordinatorService, Shared};
use crate::state::{Committed, Start, StateMachine};

/// Why the coordinator stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Durable state could not be read or written.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// The latest manifest does not fit the dataset plan.
    #[error("restoring the latest checkpoint: {0}")]
    Restore(#[from] StateError),
    /// TLS material could not be read.
    #[error("TLS: {0}")]
    Tls(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    /// The job cannot go on (stalled, too many restarts, replaced by a newer coordinator).
    #[error("the job failed: {0}")]
    JobFailed(String),
}

/// Where the job's durable state lives.
pub struct Storage {
    /// The object store of the checkpoint root.
    pub store: Arc<dyn ObjectStore>,
    /// The root inside it.
    pub root: Path,
    /// The root as a URL (given to workers).
    pub url: String,
    /// The root's folder when the store is a local disk.
    pub local: Option<std::path::PathBuf>,
}

/// Restores the coordinator's state from storage (taking over the root as a new incarnation)
/// and builds the state machine.
pub async fn restore(
    config: &CoordinatorConfig,
    plan: EpochPlan,
    storage: &Storage,
) -> Result<(StateMachine, Durable), ServeError> {
    let spec = JobSpec {
        job_id: config.job.id.clone(),
        dataset: config.job.dataset.clone(),
        seed: config.job.seed,
        total_steps: config.job.total_steps,
    };
    let durable = Durable::open(
        storage.store.clone(),
        storage.root.clone(),
        storage.local.clone(),
        &spec,
    )
    .await?;
    let committed = match durable.latest_manifest(&config.job.id).await? {
        Some(m) => {
            tracing::info!(step = m.step, folder = %m.folder, "resuming from the latest committed checkpoint");
            Some(committed_of(&plan, m)?)
        }
        None => None,
    };
    let history = durable
        .history()
        .await
        .into_iter()
        .map(|c| c.folder)
        .collect();
    let start = Start {
        incarnation: durable.incarnation(),
        committed,
        history,
        salt: rand::random(),
    };
    let state = StateMachine::new(config.state_config(), plan, start)?;
    Ok((state, durable))
}

/// The state machine's view of a committed manifest.
pub(crate) fn committed_of(plan: &EpochPlan, m: Manifest) -> Result<Committed, StateError> {
    let cursor = Cursor::from_state(plan, &m.cursor)?;
    Ok(Committed {
        step: m.step,
        folder: m.folder,
        cursor,
        assignment: m.assignment,
        quarantined: m.quarantined,
        at: 0,
    })
}

/// Serves until `shutdown` resolves.
pub async fn run(
    config: CoordinatorConfig,
    token: String,
    plan: EpochPlan,
    storage: Storage,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (state, durable) = restore(&config, plan, &storage).await?;
    let grace = config.membership.heartbeat_interval * 3;
    let shared = Shared::new(state, durable, storage.url.clone());

    let ticker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                shared.tick();
                ticks += 1;
                // Every few seconds: has a newer coordinator taken over the root?
                if ticks.is_multiple_of(25) {
                    shared.check_fenced().await;
                }
            }
        })
    };
    // A failed job: the workers hear it on their next heartbeats, then the server stops.
    let failed = {
        let shared = shared.clone();
        async move {
            let reason = shared.failed().await;
            tokio::time::sleep(grace).await;
            reason
        }
    };
    let (failure_tx, failure_rx) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            reason = failed => {
                let _ = failure_tx.send(reason);
            }
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_server = {
        let mut stop = stop_rx.clone();
        let app = crate::http::router(shared.clone());
        tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };

    let limit = config.server.max_message_size.as_u64() as usize;
    let server = CoordinatorServer::new(CoordinatorService::new(shared.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let service = InterceptedService::new(server, TokenCheck::new(&token));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CoordinatorServer<CoordinatorService>>()
        .await;

    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())))
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    tracing::info!(
        grpc = %grpc.local_addr()?,
        http = %config.server.metrics_listen,
        job = %config.job.id,
        "coordinator serving"
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
    let result = builder
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = stop_tx.send(true);
    ticker.abort();
    let _ = http_server.await;
    result?;
    match failure_rx.await {
        Ok(reason) => Err(ServeError::JobFailed(reason)),
        Err(_) => Ok(()),
    }
}
