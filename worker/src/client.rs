//! The worker's side of the coordinator contract: a tonic client that adds the job token to
//! every request, retries with exponential backoff while the coordinator is unreachable (for
//! example while it restarts), and gives up on requests the coordinator refuses.

use std::time::Duration;

use fourm_proto::v1 as pb;
use fourm_proto::v1::coordinator_client::CoordinatorClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// Adds `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Token(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut()
            .insert(fourm_proto::AUTH_HEADER, self.0.clone());
        Ok(req)
    }
}

type Inner = CoordinatorClient<InterceptedService<Channel, Token>>;

/// A coordinator client.
#[derive(Clone)]
pub struct Client {
    inner: Inner,
    max_backoff: Duration,
    give_up_after: Duration,
}

/// A client problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address or TLS material is invalid.
    #[error("coordinator endpoint {address}: {reason}")]
    Endpoint {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The coordinator refused the request.
    #[error("coordinator refused {rpc}: {status}")]
    Refused {
        /// The call.
        rpc: &'static str,
        /// Its status.
        status: Status,
    },
    /// The coordinator stayed unreachable.
    #[error("coordinator unreachable for {rpc} after {waited:?}: {status}")]
    Unreachable {
        /// The call.
        rpc: &'static str,
        /// How long we tried.
        waited: Duration,
        /// Last status.
        status: Status,
    },
}

impl ClientError {
    /// The gRPC status behind the error.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Refused { status, .. } | ClientError::Unreachable { status, .. } => {
                Some(status)
            }
            ClientError::Endpoint { .. } => None,
        }
    }
}

/// Whether a status means "try again later" rather than "no".
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
    ) && !status.message().contains("message length too large")
}

macro_rules! rpc {
    ($name:ident, $req:ty, $reply:ty) => {
        /// Calls the RPC of the same name, retrying while the coordinator is unreachable.
        pub async fn $name(&self, req: $req) -> Result<$reply, ClientError> {
            self.call(stringify!($name), req, |mut c, r| async move {
                c.$name(r).await.map(|r| r.into_inner())
            })
            .await
        }
    };
}

impl Client {
    /// A lazily-connecting client of `address` (`http://host:port` or `https://...` with `tls_ca`).
    pub fn new(
        address: &str,
        token: &str,
        tls_ca: Option<&[u8]>,
        give_up_after: Duration,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::Endpoint {
            address: address.to_string(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(70))
            .tcp_nodelay(true);
        if let Some(ca) = tls_ca {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .map_err(|e| bad(e.to_string()))?;
        }
        let header: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| bad("token is not valid ASCII".into()))?;
        let inner = CoordinatorClient::with_interceptor(endpoint.connect_lazy(), Token(header));
        Ok(Self {
            inner,
            max_backoff: Duration::from_secs(5),
            give_up_after,
        })
    }

    async fn call<Req, Rep, F, Fut>(
        &self,
        rpc: &'static str,
        req: Req,
        f: F,
    ) -> Result<Rep, ClientError>
    where
        Req: Clone,
        F: Fn(Inner, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Rep, Status>>,
    {
        let start = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match f(self.inner.clone(), req.clone()).await {
                Ok(rep) => return Ok(rep),
                Err(status) if transient(&status) => {
                    let waited = start.elapsed();
                    if waited >= self.give_up_after {
                        return Err(ClientError::Unreachable {
                            rpc,
                            waited,
                            status,
                        });
                    }
                    tracing::debug!(rpc, code = ?status.code(), backoff_ms = backoff.as_millis() as u64, "coordinator unavailable, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
                Err(status) => return Err(ClientError::Refused { rpc, status }),
            }
        }
    }

    rpc!(register, pb::RegisterRequest, pb::RegisterReply);
    rpc!(heartbeat, pb::HeartbeatRequest, pb::HeartbeatReply);
    rpc!(rendezvous, pb::RendezvousRequest, pb::RendezvousReply);
    rpc!(lease, pb::LeaseRequest, pb::LeaseReply);
    rpc!(report_progress, pb::ProgressRequest, pb::ProgressReply);
    rpc!(
        checkpoint_begin,
        pb::CheckpointBeginRequest,
        pb::CheckpointBeginReply
    );
    rpc!(
        checkpoint_done,
        pb::CheckpointDoneRequest,
        pb::CheckpointDoneReply
    );
    rpc!(leave, pb::LeaveRequest, pb::LeaveReply);
    rpc!(report_failure, pb::FailureRequest, pb::FailureReply);
    rpc!(job_status, pb::JobStatusRequest, pb::JobStatusReply);
}
