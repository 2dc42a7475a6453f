//! What the multi-process tests share: the dataset, job specs, waiting for a job, and reading
//! what a job left behind (its commit log, its sample audit).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fourm::launch::cluster::{ClusterSpec, LocalCluster};
use fourm::launch::config::LaunchConfig;
use fourm::launch::progress::read_all;
use fourm_coordinator::durable::log::{CommitLog, LogState};
use fourm_coordinator::manifest::{MANIFEST_NAME, Manifest};
use fourm_data::{DatasetStore, StoreConfig};
use fourm_worker::audit::{self, read_audit};

pub const EXE: &str = env!("CARGO_BIN_EXE_fourm-test-node");
/// Samples of the test dataset: 8 shards of 32.
pub const SAMPLES: usize = 256;
/// Shards of the test dataset.
pub const SHARDS: u64 = 8;
/// Held-out samples of the test dataset (its `val/` split).
pub const VAL_SAMPLES: usize = 16;

static SERIAL: Mutex<()> = Mutex::new(());

/// The multi-process tests run one at a time: they share this machine's cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The synthetic dataset, written once per test binary by the real `fourm data synth`.
pub fn dataset() -> &'static str {
    static DATA: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    &DATA
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let url = dir.path().join("data").to_str().unwrap().to_string();
            let out = Command::new(EXE)
                .args(["data", "synth", "--out", &url])
                .args(["--samples", &SAMPLES.to_string(), "--shard-samples", "32"])
                .args(["--resolution", "32", "--fit-samples", "64"])
                .args(["--val-samples", &VAL_SAMPLES.to_string()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "fourm data synth failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir, url)
        })
        .1
}

/// A job in a fresh folder: `workers` ranks, `steps` steps, a checkpoint every `every`, `batch`
/// samples per rank per step, `mix` shards read at once.
pub fn spec(
    dir: &Path,
    workers: u32,
    steps: u64,
    every: u64,
    batch: usize,
    mix: usize,
) -> ClusterSpec {
    spec_with(dir, workers, steps, every, batch, mix, "")
}

/// [`spec`] with more launch settings (`extra`, TOML sections other than those [`spec`] writes).
pub fn spec_with(
    dir: &Path,
    workers: u32,
    steps: u64,
    every: u64,
    batch: usize,
    mix: usize,
    extra: &str,
) -> ClusterSpec {
    let text = format!(
        "[launch]\nworkers = {workers}\nsteps = {steps}\ncheckpoint_every = {every}\nlog_every = 5\n\
         [data]\nalphas = \"uniform\"\ninput_tokens = 32\ntarget_tokens = 32\nshards_in_flight = 2\n\
         mix = {mix}\n\
         [train]\nbatch_size = {batch}\nmicro_batches = 1\nblr = 0.02\nwarmup_steps = 3\n{extra}{eval}",
        // No validation unless a test asks for it.
        eval = if extra.contains("[eval]") {
            ""
        } else {
            "[eval]\nevery = 0\n"
        }
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("launch.toml");
    std::fs::write(&path, text).unwrap();
    let config = LaunchConfig::load(Some(&path)).unwrap();
    let mut spec = ClusterSpec::new(
        PathBuf::from(EXE),
        dir.join("job"),
        dataset().to_string(),
        config,
    );
    spec.heartbeat_timeout = Duration::from_secs(3);
    spec
}

/// Waits until every worker has exited successfully.
pub fn finish(cluster: &mut LocalCluster, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while cluster.running_workers() > 0 {
        for exit in cluster.poll() {
            if exit.name != "coordinator" && !exit.status.success() {
                bail!(
                    "{} failed ({}):\n{}",
                    exit.name,
                    exit.status,
                    cluster.log_tail(&exit.name, 30)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the job did not finish in {timeout:?}; coordinator log:\n{}\nworker-0 log:\n{}",
                cluster.log_tail("coordinator", 30),
                cluster.log_tail("worker-0", 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.stop(Duration::from_secs(5));
    Ok(())
}

/// Waits for `cond`, failing with the coordinator's log after `timeout`.
pub fn wait_for(
    cluster: &mut LocalCluster,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&ClusterSpec) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond(cluster.spec()) {
        if let Some(e) = cluster.poll().into_iter().find(|e| !e.status.success()) {
            bail!(
                "{} failed ({}) while waiting for {what}:\n{}",
                e.name,
                e.status,
                cluster.log_tail(&e.name, 30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; coordinator log:\n{}",
                cluster.log_tail("coordinator", 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs `f` on a small async runtime (reading stores from a test thread).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// The checkpoint root of a job (with the environment its processes get, for S3 roots).
pub fn checkpoint_store(spec: &ClusterSpec) -> anyhow::Result<DatasetStore> {
    let url = spec.checkpoint_root()?;
    let options: Vec<(String, String)> = spec
        .env
        .iter()
        .filter_map(|(k, v)| {
            let key = match k.as_str() {
                "AWS_ENDPOINT_URL" => "aws_endpoint".to_string(),
                k if k.starts_with("AWS_") => k.to_lowercase(),
                _ => return None,
            };
            Some((key, v.clone()))
        })
        .collect();
    Ok(DatasetStore::open_durable_with_options(
        &url,
        &options,
        StoreConfig::default(),
    )?)
}

/// The job's commit log as it is now (empty before the coordinator first started).
pub fn log(spec: &ClusterSpec) -> anyhow::Result<LogState> {
    let store = checkpoint_store(spec)?;
    Ok(block_on(
        CommitLog::new(store.inner().clone(), store.root()).read(),
    )?)
}

/// Steps of the restorable committed checkpoints.
pub fn committed(spec: &ClusterSpec) -> Vec<u64> {
    log(spec)
        .map(|l| l.live().map(|c| c.step).collect())
        .unwrap_or_default()
}

/// The f32 parameters of the committed checkpoint of `step`, by ml-4m name.
pub fn checkpoint_params(
    spec: &ClusterSpec,
    step: u64,
) -> anyhow::Result<BTreeMap<String, Vec<f32>>> {
    let store = checkpoint_store(spec)?;
    let path = store
        .root()
        .clone()
        .join(folder_of(spec, step)?.as_str())
        .join("model.safetensors");
    let bytes = block_on(store.get(&path))
        .with_context(|| format!("reading {}", store.object_url(&path)))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name, values);
    }
    Ok(out)
}

/// The folder of the committed checkpoint of `step`.
pub fn folder_of(spec: &ClusterSpec, step: u64) -> anyhow::Result<String> {
    log(spec)?
        .live()
        .find(|c| c.step == step)
        .map(|c| c.folder.clone())
        .with_context(|| format!("no committed checkpoint of step {step}"))
}

/// The manifest of the newest committed checkpoint.
pub fn latest_manifest(spec: &ClusterSpec) -> anyhow::Result<Manifest> {
    let l = log(spec)?;
    let newest = l.live().next_back().context("nothing committed")?;
    let store = checkpoint_store(spec)?;
    let path = store
        .root()
        .clone()
        .join(newest.folder.as_str())
        .join(MANIFEST_NAME);
    let bytes = block_on(store.get(&path))?;
    Ok(serde_json::from_slice(&bytes)?)
}

pub fn latest_step(spec: &ClusterSpec) -> u64 {
    read_all(spec).iter().map(|l| l.step).max().unwrap_or(0)
}

/// Every sample of committed steps over all ranks, with the number of times it was trained on.
/// Every worker that trained must have left an audit file, and the result may not be empty.
pub fn audited(spec: &ClusterSpec) -> anyhow::Result<BTreeMap<String, usize>> {
    let commits: Vec<(u64, u64)> = log(spec)?
        .commits
        .iter()
        .map(|c| (c.generation, c.step))
        .collect();
    let trained: std::collections::BTreeSet<u32> = read_all(spec).iter().map(|l| l.rank).collect();
    let mut records = Vec::new();
    for i in 0..spec.workers {
        let path = spec.audit_file(i);
        if !path.exists() {
            continue;
        }
        records.extend(read_audit(&path).with_context(|| format!("{}", path.display()))?);
    }
    ensure!(
        !records.is_empty() || trained.is_empty(),
        "no audit records, although {} ranks trained",
        trained.len()
    );
    let mut seen = BTreeMap::new();
    for record in audit::committed(&records, &commits) {
        for s in record.samples.iter().chain(&record.skipped) {
            *seen.entry(s.clone()).or_insert(0) += 1;
        }
    }
    ensure!(!seen.is_empty(), "the audit holds no committed step");
    Ok(seen)
}

/// Checks exactly-once use: no sample twice in committed steps, and every sample of every epoch
/// the final cursor completed present (no loss). Returns the number of samples audited.
pub fn check_exactly_once(spec: &ClusterSpec) -> anyhow::Result<usize> {
    let seen = audited(spec)?;
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    ensure!(
        twice.is_empty(),
        "samples trained on more than once: {twice:?}"
    );
    let cursor = latest_manifest(spec)?.cursor;
    let complete = cursor.done_below / SHARDS;
    for epoch in 0..complete {
        let n = seen
            .keys()
            .filter(|k| k.starts_with(&format!("{epoch}/")))
            .count();
        ensure!(
            n == SAMPLES,
            "epoch {epoch} is complete in the cursor but {n} of its {SAMPLES} samples are in committed steps"
        );
    }
    Ok(seen.len())
}
