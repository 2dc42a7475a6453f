//! Load generator: simulates N workers (default 1,024) against a real `fourm-coordinator`
//! process — heartbeats every second, rendezvous and lease when a generation forms, a progress
//! report with metrics every second — and prints RPCs/s, p50/p99 latency per RPC, and the
//! coordinator's CPU and memory.
//!
//! `cargo run --release -p fourm-coordinator --bin coordinator-bench -- --workers 1024 --seconds 20`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fourm_data::{
    DatasetIndex, DatasetStore, INDEX_FORMAT_VERSION, ModalityInfo, ModalityKind, ShardInfo,
    StoreConfig, write_index,
};
use fourm_proto::v1 as pb;
use fourm_proto::v1::coordinator_client::CoordinatorClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 1024)]
    workers: usize,
    /// Measured seconds (after every worker joined).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// gRPC connections shared by the simulated workers.
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

const TOKEN: &str = "bench-token-0123456789";

type Latencies = Arc<Mutex<BTreeMap<&'static str, Vec<f64>>>>;

fn client(
    ch: Channel,
) -> CoordinatorClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl tonic::service::Interceptor + Clone,
    >,
> {
    let header: tonic::metadata::MetadataValue<_> =
        format!("Bearer {TOKEN}").parse().expect("ascii");
    CoordinatorClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", header.clone());
        Ok(r)
    })
}

macro_rules! timed {
    ($lat:expr, $name:literal, $call:expr) => {{
        let t = Instant::now();
        let r = $call.await;
        $lat.lock()
            .expect("lock")
            .entry($name)
            .or_default()
            .push(t.elapsed().as_secs_f64() * 1e3);
        r
    }};
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let index = DatasetIndex {
        format_version: INDEX_FORMAT_VERSION,
        modalities: BTreeMap::from([(
            "tok_rgb@224".to_string(),
            ModalityInfo {
                kind: ModalityKind::Tokens,
                extension: "npy".into(),
                vocab_size: Some(16384),
                token_shape: Some([14, 14]),
                dtype: Some("<i2".into()),
            },
        )]),
        shards: (0..10_000)
            .map(|s| ShardInfo {
                shard: s,
                samples: 100_000,
                bytes: BTreeMap::from([("tok_rgb@224".to_string(), 1)]),
                sha256: None,
            })
            .collect(),
    };
    write_index(
        &DatasetStore::open(data.to_str().context("path")?, StoreConfig::default())?,
        &index,
    )
    .await?;
    let port = free_port()?;
    let exe = std::env::current_exe()?.with_file_name("fourm-coordinator");
    let mut child = std::process::Command::new(&exe)
        .args([
            "--dataset",
            data.to_str().context("path")?,
            "--checkpoint-root",
            dir.path().join("ckpt").to_str().context("path")?,
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{}", free_port()?),
        ])
        .args([
            "--total-steps",
            "1000000",
            "--min-workers",
            &args.workers.to_string(),
            "--max-workers",
            &args.workers.to_string(),
        ])
        .env("FOURM_JOB_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        let ch = loop {
            match Channel::from_shared(endpoint.clone())?.connect().await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        channels.push(ch);
    }
    let lat: Latencies = Arc::default();
    let joined = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..args.workers {
        let mut c = client(channels[w % channels.len()].clone());
        let (lat, joined, stop) = (lat.clone(), joined.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("w{w}");
            let info = pb::WorkerInfo {
                worker_id: id.clone(),
                collective_address: format!("10.0.{}.{}:7000", w / 250, w % 250),
                device: "cpu".into(),
                config_digest: "bench".into(),
            };
            timed!(
                lat,
                "register",
                c.register(pb::RegisterRequest {
                    worker: Some(info),
                    version: "bench".into()
                })
            )
            .ok();
            let (mut generation, mut step, mut entries): (u64, u64, Vec<pb::ShardLease>) =
                (0, 0, Vec::new());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::time::sleep(Duration::from_millis((w as u64 * 997) % 1000)).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let Ok(r) = timed!(
                    lat,
                    "heartbeat",
                    c.heartbeat(pb::HeartbeatRequest {
                        worker_id: id.clone(),
                        generation,
                        step,
                        phase: 3
                    })
                ) else {
                    continue;
                };
                let r = r.into_inner();
                if r.instruction == pb::Instruction::Join as i32 {
                    generation = r.generation;
                    timed!(
                        lat,
                        "rendezvous",
                        c.rendezvous(pb::RendezvousRequest {
                            worker_id: id.clone(),
                            generation,
                            nccl_unique_id: vec![],
                            wait_ms: 0
                        })
                    )
                    .ok();
                    if let Ok(l) = timed!(
                        lat,
                        "lease",
                        c.lease(pb::LeaseRequest {
                            worker_id: id.clone(),
                            generation,
                            count: 4
                        })
                    ) {
                        entries = l.into_inner().upcoming;
                    }
                    joined.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else if generation != 0 && !entries.is_empty() {
                    step += 1;
                    let progress = vec![pb::EntryProgress {
                        entry: entries[0].entry,
                        consumed: entries[0].start + step * 8,
                    }];
                    let metrics = pb::StepMetrics {
                        loss: 3.0,
                        tokens_per_s: 1e4,
                        ..Default::default()
                    };
                    timed!(
                        lat,
                        "report_progress",
                        c.report_progress(pb::ProgressRequest {
                            quarantined: Vec::new(),
                            worker_id: id.clone(),
                            generation,
                            step,
                            entries: progress,
                            metrics: Some(metrics)
                        })
                    )
                    .ok();
                }
            }
        }));
    }
    let t0 = Instant::now();
    while joined.load(std::sync::atomic::Ordering::Relaxed) < args.workers {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "only {} of {} workers joined",
            joined.load(std::sync::atomic::Ordering::Relaxed),
            args.workers
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let formation = t0.elapsed();
    lat.lock().expect("lock").clear();
    let cpu0 = cpu_seconds(pid)?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let rss = rss_mib(pid)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lat = lat.lock().expect("lock").clone();
    let total: usize = lat.values().map(Vec::len).sum();
    println!(
        "workers {}  generation formed after {:.1} s  measured {wall:.1} s",
        args.workers,
        formation.as_secs_f64()
    );
    println!("rpcs/s {:.0}", total as f64 / wall);
    for (name, mut v) in lat {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() as f64 - 1.0) * p) as usize];
        println!(
            "{name:16} n {:7}  p50 {:6.2} ms  p99 {:6.2} ms",
            v.len(),
            q(0.5),
            q(0.99)
        );
    }
    println!(
        "coordinator cpu {:.1}% of one core, rss {rss:.1} MiB",
        100.0 * cpu / wall
    );
    child.kill().ok();
    for t in tasks {
        t.abort();
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .context("stat")?
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(kb / 1024.0)
}
