//! The real coordinator server on `127.0.0.1:0`, driven by scripted tonic clients playing workers:
//! join, checkpoint, kill (stop heartbeating), rejoin, stale and unauthenticated and oversized
//! requests refused, and a coordinator restart that resumes from its object-store state.

use std::sync::Arc;
use std::time::Duration;

use fourm_coordinator::config::CoordinatorConfig;
use fourm_coordinator::server::{Storage, run};
use fourm_plan::{EpochPlan, ShardSize};
use fourm_proto::v1 as pb;
use fourm_proto::v1::coordinator_client::CoordinatorClient;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const TOKEN: &str = "test-token-0123456789";

type Client = CoordinatorClient<InterceptedService<Channel, Interceptor>>;

struct Server {
    addr: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn config(dir: &std::path::Path) -> CoordinatorConfig {
    let toml = format!(
        r#"
        [server]
        max_message_size = "64KiB"
        [job]
        id = "test-job"
        dataset = "memory://dataset"
        checkpoint_root = "file://{}/ckpt"
        total_steps = 1000
        checkpoint_every = 0
        keep_last = 2
        [membership]
        min_workers = 2
        max_workers = 2
        join_timeout = "200ms"
        heartbeat_interval = "100ms"
        heartbeat_timeout = "700ms"
        "#,
        dir.display()
    );
    let config = CoordinatorConfig::from_toml(&toml, std::path::Path::new("test.toml")).unwrap();
    config.validate().unwrap();
    config
}

fn plan() -> EpochPlan {
    EpochPlan::new(
        3,
        (0..4)
            .map(|i| ShardSize {
                shard: i,
                samples: 20,
            })
            .collect(),
    )
    .unwrap()
}

async fn start(dir: &std::path::Path) -> Server {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
    let storage = Storage {
        store,
        root: Path::from("ckpt"),
        url: format!("file://{}/ckpt", dir.display()),
        local: Some(dir.join("ckpt")),
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run(
            config_dir(&storage),
            TOKEN.into(),
            plan(),
            storage,
            grpc,
            http,
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    // Ready when the health service says so.
    let channel = loop {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            break c;
        }
        tokio::task::yield_now().await;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    loop {
        let req = tonic_health::pb::HealthCheckRequest {
            service: "fourm.v1.Coordinator".into(),
        };
        if let Ok(r) = health.check(req).await
            && r.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server {
        addr,
        http: http_addr,
        stop: Some(tx),
        task,
    }
}

fn config_dir(storage: &Storage) -> CoordinatorConfig {
    let dir = storage
        .url
        .trim_start_matches("file://")
        .trim_end_matches("/ckpt");
    config(std::path::Path::new(dir))
}

type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

async fn client(addr: std::net::SocketAddr, token: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header: Option<MetadataValue<_>> = token.map(|t| format!("Bearer {t}").parse().unwrap());
    let interceptor: Interceptor = Box::new(move |mut req: tonic::Request<()>| {
        if let Some(h) = &header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    });
    CoordinatorClient::with_interceptor(channel, interceptor)
}

fn worker(id: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        worker: Some(pb::WorkerInfo {
            worker_id: id.into(),
            collective_address: format!("127.0.0.1:{}", 7000 + id.len()),
            device: "cpu".into(),
            config_digest: "d1".into(),
        }),
        version: "test".into(),
    }
}

async fn heartbeat(c: &mut Client, id: &str, generation: u64, step: u64) -> pb::HeartbeatReply {
    c.heartbeat(pb::HeartbeatRequest {
        worker_id: id.into(),
        generation,
        step,
        phase: 0,
    })
    .await
    .unwrap()
    .into_inner()
}

/// Heartbeats until told to join; returns the generation.
async fn wait_join(c: &mut Client, id: &str) -> u64 {
    for _ in 0..200 {
        let r = heartbeat(c, id, 0, 0).await;
        if r.instruction == pb::Instruction::Join as i32 {
            return r.generation;
        }
        if r.instruction == pb::Instruction::Register as i32 {
            c.register(worker(id)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} was never told to join");
}

async fn checkpoint(a: &mut Client, b: &mut Client, generation: u64, step: u64) {
    let r = a
        .rendezvous(pb::RendezvousRequest {
            worker_id: "w1".into(),
            generation,
            nccl_unique_id: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (zero, other, zero_id, other_id) = if r.rank == 0 {
        (a, b, "w1", "w2")
    } else {
        (b, a, "w2", "w1")
    };
    for (c, id) in [(&mut *zero, zero_id), (&mut *other, other_id)] {
        c.report_progress(pb::ProgressRequest {
            quarantined: Vec::new(),
            worker_id: id.into(),
            generation,
            step,
            entries: vec![],
            metrics: None,
        })
        .await
        .unwrap();
    }
    let begin = zero
        .checkpoint_begin(pb::CheckpointBeginRequest {
            worker_id: zero_id.into(),
            generation,
            step,
        })
        .await
        .unwrap()
        .into_inner();
    let folder = begin.prefix.trim_start_matches("file://");
    std::fs::create_dir_all(folder).unwrap();
    std::fs::write(format!("{folder}/model.safetensors"), b"weights").unwrap();
    let files = vec![pb::CheckpointFile {
        name: "model.safetensors".into(),
        size: 7,
        // SHA-256 of b"weights": the commit reads the file back and checks it.
        sha256: "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c".into(),
    }];
    let first = zero
        .checkpoint_done(pb::CheckpointDoneRequest {
            worker_id: zero_id.into(),
            generation,
            step,
            files,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.committed, "not every rank has acknowledged yet");
    let second = other
        .checkpoint_done(pb::CheckpointDoneRequest {
            worker_id: other_id.into(),
            generation,
            step,
            files: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(second.committed);
    assert!(std::path::Path::new(&format!("{folder}/MANIFEST.json")).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_join_checkpoint_fail_rejoin_and_survive_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let (mut a, mut b) = (
        client(server.addr, Some(TOKEN)).await,
        client(server.addr, Some(TOKEN)).await,
    );
    a.register(worker("w1")).await.unwrap();
    b.register(worker("w2")).await.unwrap();
    let g = wait_join(&mut a, "w1").await;
    assert_eq!(wait_join(&mut b, "w2").await, g);

    // Ranks, peers, leases.
    let ra = a
        .rendezvous(pb::RendezvousRequest {
            worker_id: "w1".into(),
            generation: g,
            nccl_unique_id: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ra.rank, ra.world_size, ra.peers.len()), (0, 2, 2));
    assert!(ra.restore.is_none(), "fresh job");
    let lease = b
        .lease(pb::LeaseRequest {
            worker_id: "w2".into(),
            generation: g,
            count: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lease.upcoming.len(), 3);
    assert_eq!(lease.assignment.unwrap().world_size, 2);

    // Progress on another rank's entry is refused.
    let theirs = lease.upcoming[0].entry;
    let err = a
        .report_progress(pb::ProgressRequest {
            quarantined: Vec::new(),
            worker_id: "w1".into(),
            generation: g,
            step: 1,
            entries: vec![pb::EntryProgress {
                entry: theirs,
                consumed: 1,
            }],
            metrics: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    checkpoint(&mut a, &mut b, g, 5).await;

    // Unauthenticated and oversized requests.
    let mut anon = client(server.addr, None).await;
    assert_eq!(
        anon.job_status(pb::JobStatusRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let mut wrong = client(server.addr, Some("wrong-token-0123456789")).await;
    assert_eq!(
        wrong
            .job_status(pb::JobStatusRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let huge = (0..10_000)
        .map(|i| pb::EntryProgress {
            entry: i,
            consumed: 1,
        })
        .collect();
    let err = a
        .report_progress(pb::ProgressRequest {
            quarantined: Vec::new(),
            worker_id: "w1".into(),
            generation: g,
            step: 6,
            entries: huge,
            metrics: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err}"
    );

    // Kill w2 (it stops heartbeating): w1 is told to abort; a replacement joins the next generation,
    // which restores the checkpoint.
    let mut aborted = false;
    for _ in 0..100 {
        let r = heartbeat(&mut a, "w1", g, 6).await;
        if r.instruction == pb::Instruction::AbortCollective as i32 {
            assert!(r.reason.contains("w2"), "{}", r.reason);
            aborted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(aborted, "w1 was not told that w2 is gone");
    let stale = a
        .report_progress(pb::ProgressRequest {
            quarantined: Vec::new(),
            worker_id: "w1".into(),
            generation: g,
            step: 7,
            entries: vec![],
            metrics: None,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains("stale generation"),
        "{}",
        stale.message()
    );
    let mut c = client(server.addr, Some(TOKEN)).await;
    c.register(worker("w2")).await.unwrap();
    let (g2, _) = tokio::join!(wait_join(&mut a, "w1"), wait_join(&mut c, "w2"));
    assert!(g2 > g);
    let r = a
        .rendezvous(pb::RendezvousRequest {
            worker_id: "w1".into(),
            generation: g2,
            nccl_unique_id: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.restore.as_ref().map(|p| p.step), Some(5));

    // Metrics and status over HTTP.
    let body = http_get(server.http, "/metrics").await;
    assert!(body.contains("fourm_committed_step 5"), "{body}");
    assert!(body.contains("fourm_workers_alive 2"), "{body}");
    let status: serde_json::Value =
        serde_json::from_str(&http_get(server.http, "/status").await).unwrap();
    assert_eq!(status["committed_step"], 5);

    // Restart the coordinator on the same storage: workers are told to register again and the new
    // generation restores the committed checkpoint; the old generation is stale.
    server.stop().await;
    let server = start(dir.path()).await;
    let (mut a, mut c) = (
        client(server.addr, Some(TOKEN)).await,
        client(server.addr, Some(TOKEN)).await,
    );
    let r = heartbeat(&mut a, "w1", g2, 8).await;
    assert_eq!(r.instruction, pb::Instruction::Register as i32);
    let (g3, _) = tokio::join!(wait_join(&mut a, "w1"), wait_join(&mut c, "w2"));
    assert_ne!(g3 >> 32, g2 >> 32, "a new incarnation of the coordinator");
    let r = a
        .rendezvous(pb::RendezvousRequest {
            worker_id: "w1".into(),
            generation: g3,
            nccl_unique_id: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.restore.map(|p| p.step), Some(5));
    let status = a
        .job_status(pb::JobStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.committed_step, 5);
    server.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}
