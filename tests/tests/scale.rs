//! Scale features with real processes: a global batch that holds whatever the world size (also
//! when a worker dies), the optimizer state sharded over the ranks (ZeRO-1) with the parameters
//! of an unsharded run, and sharded checkpoints that resume at another world size, sharded or
//! not.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use common::{
    block_on, check_exactly_once, checkpoint_params, checkpoint_store, committed, finish,
    folder_of, latest_step, serial, spec_with, wait_for,
};
use fourm::launch::cluster::{ClusterSpec, LocalCluster};
use fourm::launch::progress::read_all;
use fourm_worker::audit::{self, read_audit};
use fourm_worker::metrics::MetricsLine;

/// Samples of each committed step, over all ranks (from the sample audit).
fn samples_per_step(spec: &ClusterSpec) -> anyhow::Result<BTreeMap<u64, usize>> {
    let commits: Vec<(u64, u64)> = common::log(spec)?
        .commits
        .iter()
        .map(|c| (c.generation, c.step))
        .collect();
    let mut records = Vec::new();
    for i in 0..spec.workers {
        let path = spec.audit_file(i);
        if path.exists() {
            records.extend(read_audit(&path)?);
        }
    }
    let mut per_step = BTreeMap::new();
    for r in audit::committed(&records, &commits) {
        *per_step.entry(r.step).or_insert(0) += r.samples.len() + r.skipped.len();
    }
    Ok(per_step)
}

/// The learning rate of each step (the latest run of a step counts; every rank logs the same).
fn lr_per_step(spec: &ClusterSpec) -> BTreeMap<u64, f64> {
    let mut lines: Vec<MetricsLine> = read_all(spec);
    lines.sort_by_key(|l| l.unix_ms);
    lines.into_iter().map(|l| (l.step, l.lr)).collect()
}

const GLOBAL: &str = "global_batch = 24\n";

#[test]
fn a_global_batch_holds_across_world_sizes_and_a_death() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let steps = 12;
    let job = |name: &str, workers: u32| {
        let mut s = spec_with(&dir.path().join(name), workers, steps, 3, 4, 2, GLOBAL);
        s.audit = true;
        s.min_workers = 2;
        s.join_timeout = Duration::from_secs(2);
        s
    };
    let mut runs = Vec::new();
    for (name, workers) in [("three", 3), ("two", 2)] {
        let mut cluster = LocalCluster::start(job(name, workers))?;
        finish(&mut cluster, Duration::from_secs(240))?;
        runs.push(cluster.spec().clone());
    }
    // Three workers, one killed once a checkpoint is committed: the rest go on with two.
    let mut cluster = LocalCluster::start(job("killed", 3))?;
    wait_for(&mut cluster, Duration::from_secs(120), "step 5", |s| {
        latest_step(s) >= 5 && !committed(s).is_empty()
    })?;
    cluster.kill_worker(2)?;
    finish(&mut cluster, Duration::from_secs(240))?;
    let worlds: Vec<u32> = read_all(cluster.spec()).iter().map(|l| l.world).collect();
    ensure!(
        worlds.contains(&3) && worlds.contains(&2),
        "the killed run trained with 3 then 2 ranks: {worlds:?}"
    );
    runs.push(cluster.spec().clone());

    let reference = lr_per_step(&runs[0]);
    ensure!(reference.len() == steps as usize, "{reference:?}");
    for spec in &runs {
        let per_step = samples_per_step(spec)?;
        ensure!(
            per_step.len() == steps as usize && per_step.values().all(|&n| n == 24),
            "{}: samples per step {per_step:?}",
            spec.dir.display()
        );
        ensure!(
            lr_per_step(spec) == reference,
            "{}: the learning rate differs from the 3-worker run's",
            spec.dir.display()
        );
        check_exactly_once(spec)?;
    }
    Ok(())
}

/// The largest absolute difference between two parameter sets, and how many values differ.
fn max_diff(
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
) -> anyhow::Result<(f32, usize)> {
    ensure!(a.keys().eq(b.keys()), "different parameter names");
    let mut worst = 0.0f32;
    let mut moved = 0usize;
    for (name, xs) in a {
        ensure!(xs.len() == b[name].len(), "{name}: different sizes");
        for (x, y) in xs.iter().zip(&b[name]) {
            worst = worst.max((x - y).abs());
            moved += usize::from(x != y);
        }
    }
    Ok((worst, moved))
}

#[test]
fn a_sharded_optimizer_reaches_the_parameters_of_an_unsharded_one() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut got = Vec::new();
    for (name, extra) in [("whole", ""), ("sharded", "shard_optimizer = true\n")] {
        let mut cluster =
            LocalCluster::start(spec_with(&dir.path().join(name), 2, 20, 20, 4, 2, extra))?;
        finish(&mut cluster, Duration::from_secs(240))?;
        got.push(checkpoint_params(cluster.spec(), 20)?);
    }
    let (worst, moved) = max_diff(&got[0], &got[1])?;
    eprintln!("sharded vs unsharded after 20 steps: max |diff| {worst:e}, {moved} values differ");
    ensure!(worst < 1e-4, "max |diff| {worst}");
    Ok(())
}

#[test]
fn a_sharded_checkpoint_resumes_on_other_world_sizes() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let sharded = format!("{GLOBAL}shard_optimizer = true\n");
    // Three sharded ranks of a 12-step job write step 6, and are stopped before step 12 (their
    // steps slowed down, so that the stop comes well before).
    let mut first = spec_with(&dir.path().join("job"), 3, 12, 6, 4, 2, &sharded);
    first.env = vec![("FAILPOINTS".into(), "train-step=sleep(250)".into())];
    let mut cluster = LocalCluster::start(first.clone())?;
    wait_for(&mut cluster, Duration::from_secs(120), "commit 6", |s| {
        committed(s).contains(&6)
    })?;
    drop(cluster);
    ensure!(committed(&first) == vec![6], "{:?}", committed(&first));
    let folder = folder_of(&first, 6)?;
    let store = checkpoint_store(&first)?;
    let manifest: serde_json::Value = serde_json::from_slice(&block_on(
        store.get(
            &store
                .root()
                .clone()
                .join(folder.as_str())
                .join("MANIFEST.json"),
        ),
    )?)?;
    let names: Vec<&str> = manifest["files"]
        .as_array()
        .context("files")?
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    for rank in 0..3 {
        let shard = format!("optimizer-{rank:05}-of-00003.safetensors");
        ensure!(names.contains(&shard.as_str()), "{shard} not in {names:?}");
    }

    // The same checkpoint root, copied, resumed by 2 sharded ranks, 2 unsharded ranks and 1
    // unsharded rank. The two 2-rank resumes train the same samples per step, and sharding alone
    // changes no bit (see above), so they must end at the same parameters: one reslices the 3
    // optimizer shards into 2, the other reassembles the whole state, and a wrongly placed moment
    // in either would set them apart.
    let mut ends = Vec::new();
    for (name, workers, extra) in [
        ("two-sharded", 2, sharded.clone()),
        ("two-whole", 2, GLOBAL.to_string()),
        ("one-whole", 1, GLOBAL.to_string()),
    ] {
        let spec = spec_with(&dir.path().join(name), workers, 12, 3, 4, 2, &extra);
        copy_dir(&first.checkpoint_dir(), &spec.checkpoint_dir())?;
        let mut cluster = LocalCluster::start(spec)?;
        finish(&mut cluster, Duration::from_secs(240))?;
        let lines = read_all(cluster.spec());
        let first_step = lines.iter().map(|l| l.step).min().unwrap_or(0);
        ensure!(
            first_step == 7,
            "{name}: resumed at step {first_step}, not after the checkpoint of step 6"
        );
        ensure!(committed(cluster.spec()).last() == Some(&12), "{name}");
        ensure!(
            lines.iter().all(|l| l.world == workers),
            "{name}: trained with other world sizes"
        );
        ends.push(checkpoint_params(cluster.spec(), 12)?);
    }
    let (worst, moved) = max_diff(&ends[0], &ends[1])?;
    eprintln!(
        "resumed on 2 sharded vs 2 whole ranks, step 12: max |diff| {worst:e}, {moved} differ"
    );
    ensure!(
        worst < 1e-6,
        "the 2-rank resumes diverged: max |diff| {worst}"
    );

    // And the interrupted job, resumed by its own 3 sharded ranks, ends where a run without the
    // interruption ends: the restored parameters and moments are the ones that were saved.
    let mut cluster = LocalCluster::start(ClusterSpec {
        env: Vec::new(),
        ..first.clone()
    })?;
    finish(&mut cluster, Duration::from_secs(240))?;
    let resumed = checkpoint_params(&first, 12)?;
    let mut cluster = LocalCluster::start(spec_with(
        &dir.path().join("straight"),
        3,
        12,
        6,
        4,
        2,
        &sharded,
    ))?;
    finish(&mut cluster, Duration::from_secs(240))?;
    let (worst, moved) = max_diff(&resumed, &checkpoint_params(cluster.spec(), 12)?)?;
    eprintln!("resumed vs uninterrupted, step 12: max |diff| {worst:e}, {moved} differ");
    ensure!(worst < 1e-6, "the resumed job diverged: max |diff| {worst}");
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
