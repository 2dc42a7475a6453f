//! The chaos suite: a 3-worker job with its checkpoints in S3 (moto, behind a proxy that can take
//! it down) while, on a seeded schedule, workers are killed with SIGKILL (rank 0 included, also
//! during a checkpoint upload, which a failpoint slows down), the coordinator is killed and
//! restarted (also between a checkpoint's files and its manifest, a window another failpoint
//! widens), and the store goes down for seconds at a time.
//!
//! Checked: the job finishes with its steps; no committed checkpoint is ever lost (every one the
//! log lists as restorable exists, whole, whenever the store answers); every sample of every
//! completed epoch is in exactly one committed step (the audit of every rank against the commit
//! log: no duplicate, no loss); no process outlives its bound.
//!
//! `cargo test -p fourm-tests --test chaos` runs one job (a few minutes). With
//! `FOURM_CHAOS_MINUTES=20` it runs jobs of successive seeds for that long; `FOURM_CHAOS_SEED`
//! picks the first seed.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::{check_exactly_once, checkpoint_store, committed, log, serial, spec};
use fourm::launch::cluster::LocalCluster;
use fourm_coordinator::manifest::MANIFEST_NAME;
use fourm_data::moto::MotoServer;
use fourm_data::proxy::FlakyProxy;
use object_store::ObjectStoreExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Steps of a job of the short mode (CI) and of the long mode.
const STEPS: u64 = 150;
const LONG_STEPS: u64 = 300;
const WORKERS: u32 = 3;
/// No job may take longer than this, whatever the schedule.
const JOB_BOUND: Duration = Duration::from_secs(600);

#[test]
fn chaos() -> anyhow::Result<()> {
    let _serial = serial();
    let minutes: u64 = std::env::var("FOURM_CHAOS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let mut seed: u64 = std::env::var("FOURM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    loop {
        let steps = if minutes == 0 { STEPS } else { LONG_STEPS };
        let report = run(seed, steps).with_context(|| format!("chaos seed {seed}"))?;
        eprintln!("chaos seed {seed}: {report}");
        seed += 1;
        if Instant::now() >= until {
            return Ok(());
        }
    }
}

/// A fault the schedule injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillWorker,
    KillRank0,
    KillCoordinator,
    StoreDown,
}

/// What one chaotic job went through.
#[derive(Default)]
struct Report {
    worker_kills: u32,
    rank0_kills: u32,
    coordinator_kills: u32,
    outages: u32,
    generations: usize,
    elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} worker kills ({} of rank 0), {} coordinator kills, {} store outages, {} generations, {:.0} s",
            self.worker_kills,
            self.rank0_kills,
            self.coordinator_kills,
            self.outages,
            self.generations,
            self.elapsed.as_secs_f64()
        )
    }
}

fn run(seed: u64, steps: u64) -> anyhow::Result<Report> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let moto = MotoServer::start(&format!("fourm-chaos-{seed}")).map_err(anyhow::Error::msg)?;
    let target = moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .context("moto address")?;
    let proxy = FlakyProxy::start(target)?;
    let dir = tempfile::tempdir()?;
    let mut s = spec(dir.path(), WORKERS, steps, 5, 4, 2);
    s.audit = true;
    s.min_workers = 1;
    s.join_timeout = Duration::from_secs(2);
    s.progress_timeout = Duration::from_secs(30);
    s.stall_timeout = Duration::from_secs(240);
    s.max_restarts = 1000;
    s.checkpoint_url = Some(moto.url("ckpt"));
    s.env = moto
        .env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "AWS_ENDPOINT_URL" => (k, proxy.endpoint()),
            _ => (k, v),
        })
        .collect();
    // Slow every upload and every commit a little, so that kills land inside them.
    s.env.push((
        "FAILPOINTS".into(),
        "checkpoint-upload=sleep(300);commit-manifest=sleep(300)".into(),
    ));
    let started = Instant::now();
    let mut cluster = LocalCluster::start(s)?;
    let mut report = Report::default();
    // Every kind of fault at least twice, in a seeded order, then more at random.
    let mut schedule = vec![
        Fault::KillRank0,
        Fault::KillRank0,
        Fault::KillWorker,
        Fault::KillWorker,
        Fault::KillCoordinator,
        Fault::KillCoordinator,
        Fault::StoreDown,
        Fault::StoreDown,
    ];
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.random_range(0..=i));
    }
    let mut next_event = Instant::now() + Duration::from_millis(rng.random_range(1_500..3_000));
    let mut restore_workers: Vec<(Instant, u32)> = Vec::new();
    let mut restore_coordinator: Option<Instant> = None;
    let mut store_back: Option<Instant> = None;
    let mut live_seen: BTreeSet<String> = BTreeSet::new();
    loop {
        if started.elapsed() > JOB_BOUND {
            bail!(
                "the job did not finish within {JOB_BOUND:?} ({report}); coordinator log:\n{}",
                cluster.log_tail("coordinator", 30)
            );
        }
        let done = committed(cluster.spec()).last() == Some(&steps);
        for exit in cluster.poll() {
            if !exit.status.success() {
                bail!(
                    "{} failed ({}):\n{}",
                    exit.name,
                    exit.status,
                    cluster.log_tail(&exit.name, 30)
                );
            }
        }
        if done && cluster.running_workers() == 0 {
            break;
        }
        let now = Instant::now();
        // Bring back what was taken down.
        restore_workers.retain(|&(at, i)| {
            if now >= at {
                cluster.start_worker(i).expect("restarting a worker");
                false
            } else {
                true
            }
        });
        if restore_coordinator.is_some_and(|at| now >= at) {
            restore_coordinator = None;
            cluster.start_coordinator()?;
        }
        if store_back.is_some_and(|at| now >= at) {
            store_back = None;
            proxy.set_down(false);
        }
        // No committed checkpoint is ever lost.
        if store_back.is_none() {
            check_live_checkpoints(&cluster, &mut live_seen)?;
        }
        // The next fault.
        if !done && now >= next_event {
            // The scheduled faults close together, the random ones after them sparser.
            let gap = if schedule.is_empty() {
                3_000..6_000
            } else {
                1_500..3_000
            };
            next_event = now + Duration::from_millis(rng.random_range(gap));
            let fault = if schedule.is_empty() {
                [
                    Fault::KillWorker,
                    Fault::KillRank0,
                    Fault::KillCoordinator,
                    Fault::StoreDown,
                ][rng.random_range(0..4)]
            } else {
                schedule.remove(0)
            };
            match fault {
                Fault::KillWorker | Fault::KillRank0 => {
                    let i = match fault {
                        // Ranks follow the worker ids: worker-0 is rank 0 whenever it is in.
                        Fault::KillRank0 => 0,
                        _ => rng.random_range(0..WORKERS),
                    };
                    if !restore_workers.iter().any(|&(_, w)| w == i) {
                        cluster.kill_worker(i)?;
                        report.worker_kills += 1;
                        report.rank0_kills += u32::from(i == 0);
                        let back = Duration::from_millis(rng.random_range(300..1_500));
                        restore_workers.push((now + back, i));
                    }
                }
                Fault::KillCoordinator if restore_coordinator.is_none() => {
                    cluster.kill_coordinator()?;
                    report.coordinator_kills += 1;
                    let back = Duration::from_millis(rng.random_range(300..1_500));
                    restore_coordinator = Some(now + back);
                }
                Fault::StoreDown if store_back.is_none() => {
                    proxy.set_down(true);
                    report.outages += 1;
                    let back = Duration::from_millis(rng.random_range(1_500..4_000));
                    store_back = Some(now + back);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    proxy.set_down(false);
    cluster.stop(Duration::from_secs(10));
    let spec = cluster.spec();
    ensure!(
        committed(spec).last() == Some(&steps),
        "{:?}",
        committed(spec)
    );
    check_live_checkpoints(&cluster, &mut live_seen)?;
    check_exactly_once(spec)?;
    report.generations = fourm::launch::progress::read_all(spec)
        .iter()
        .map(|l| l.generation)
        .collect::<BTreeSet<_>>()
        .len();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Every checkpoint the log lists as restorable has its manifest and every file the manifest
/// names. `seen` collects them (for the report of what was checked). A folder found incomplete
/// counts as lost only if the log, read again, still lists it (retention retires a folder in the
/// log before it deletes it).
fn check_live_checkpoints(
    cluster: &LocalCluster,
    seen: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    match find_lost(cluster, seen)? {
        Some(lost) => {
            let still_live = log(cluster.spec())
                .map(|l| l.live().any(|c| c.folder == lost.0))
                .unwrap_or(false);
            ensure!(
                !still_live,
                "committed checkpoint {} lost {}",
                lost.0,
                lost.1
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// A restorable checkpoint with something missing: (folder, what).
fn find_lost(
    cluster: &LocalCluster,
    seen: &mut BTreeSet<String>,
) -> anyhow::Result<Option<(String, String)>> {
    let spec = cluster.spec();
    let Ok(state) = log(spec) else {
        return Ok(None); // the store did not answer: nothing to conclude
    };
    let store = checkpoint_store(spec)?;
    for c in state.live() {
        let folder = store.root().clone().join(c.folder.as_str());
        let manifest = match common::block_on(store.get(&folder.clone().join(MANIFEST_NAME))) {
            Ok(m) => m,
            Err(fourm_data::DataError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => return Ok(Some((c.folder.clone(), MANIFEST_NAME.into()))),
            Err(_) => return Ok(None),
        };
        let manifest: fourm_coordinator::manifest::Manifest = serde_json::from_slice(&manifest)?;
        for f in &manifest.files {
            let path = folder.clone().join(f.name.as_str());
            match common::block_on(store.inner().head(&path)) {
                Ok(meta) => ensure!(
                    meta.size == f.size,
                    "committed file {} has {} bytes, {} committed",
                    path,
                    meta.size,
                    f.size
                ),
                Err(object_store::Error::NotFound { .. }) => {
                    return Ok(Some((c.folder.clone(), f.name.clone())));
                }
                Err(_) => return Ok(None),
            }
        }
        seen.insert(c.folder.clone());
    }
    Ok(None)
}
