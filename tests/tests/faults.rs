//! Failure paths of real processes, each injected on purpose: a checkpoint upload that fails
//! (the last one, and in a one-worker job), a committed checkpoint that fails verification, a
//! worker wedged in its restore, the checkpoint store down during a restore, a job that cannot
//! make progress. Each must end in a finished job (or a loud failure), never a hang.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{
    check_exactly_once, checkpoint_store, committed, finish, folder_of, serial, spec, wait_for,
};
use fourm::launch::cluster::LocalCluster;
use fourm::launch::progress::read_all;
use fourm_data::moto::MotoServer;
use fourm_data::proxy::FlakyProxy;

/// The last checkpoint's upload fails once: the generation ends at once (no rank waits for a
/// commit that will not come), the next one retrains from the checkpoint before and commits.
#[test]
fn a_failed_upload_of_the_last_checkpoint_does_not_hang_the_job() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut s = spec(dir.path(), 2, 20, 10, 4, 2);
    s.audit = true;
    s.join_timeout = Duration::from_secs(2);
    s.stall_timeout = Duration::from_secs(60);
    s.progress_timeout = Duration::from_secs(30);
    let mut cluster = LocalCluster::start(s)?;
    // Rank 0 (worker-0) fails its second upload (step 20, the last), once.
    cluster.kill_worker(0)?;
    cluster.start_worker_with(
        0,
        &[("FAILPOINTS", "checkpoint-upload=1*off->1*return->off")],
    )?;
    finish(&mut cluster, Duration::from_secs(120))?;
    let spec = cluster.spec();
    ensure!(committed(spec).last() == Some(&20), "{:?}", committed(spec));
    let log = std::fs::read_to_string(spec.log_file("worker-0"))?;
    ensure!(
        log.contains("failpoint checkpoint-upload"),
        "the failpoint did not fire"
    );
    check_exactly_once(spec)?;
    Ok(())
}

/// A one-worker job has no collective that could fail when its upload does: the worker ends
/// its generation by telling the coordinator, and the job goes on.
#[test]
fn a_one_worker_job_survives_a_failed_upload() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut s = spec(dir.path(), 1, 20, 5, 4, 2);
    s.stall_timeout = Duration::from_secs(60);
    s.progress_timeout = Duration::from_secs(30);
    // The second upload (step 10) fails, once.
    s.env = vec![(
        "FAILPOINTS".into(),
        "checkpoint-upload=1*off->1*return->off".into(),
    )];
    let mut cluster = LocalCluster::start(s)?;
    finish(&mut cluster, Duration::from_secs(120))?;
    ensure!(committed(cluster.spec()).last() == Some(&20));
    let generations: std::collections::BTreeSet<u64> = read_all(cluster.spec())
        .iter()
        .map(|l| l.generation)
        .collect();
    ensure!(
        generations.len() >= 2,
        "the failed upload should have ended a generation: {generations:?}"
    );
    Ok(())
}

/// The newest committed checkpoint is damaged on disk: the workers' restore finds a file whose
/// hash differs, the coordinator marks the checkpoint bad and the job resumes from the one
/// before, instead of every worker exiting.
#[test]
fn a_damaged_checkpoint_falls_back_to_the_one_before() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut s = spec(dir.path(), 2, 30, 10, 4, 2);
    s.join_timeout = Duration::from_secs(2);
    let mut first = LocalCluster::start(s)?;
    wait_for(
        &mut first,
        Duration::from_secs(120),
        "the step-20 commit",
        |s| committed(s).contains(&20),
    )?;
    first.kill_worker(0)?;
    first.kill_worker(1)?;
    first.kill_coordinator()?;
    let spec = first.spec().clone();
    drop(first);
    if committed(&spec).contains(&30) {
        anyhow::bail!("the job finished before it could be stopped; rerun");
    }
    // Damage one byte of the step-20 model file.
    let model = spec
        .checkpoint_dir()
        .join(folder_of(&spec, 20)?)
        .join("model.safetensors");
    let mut bytes = std::fs::read(&model)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&model, bytes)?;
    let mut again = LocalCluster::start(spec)?;
    finish(&mut again, Duration::from_secs(180))?;
    let log = common::log(again.spec())?;
    let bad: Vec<_> = log.commits.iter().filter(|c| c.bad.is_some()).collect();
    ensure!(
        bad.len() == 1 && bad[0].step == 20,
        "step 20 should be marked bad: {:?}",
        log.commits
    );
    ensure!(
        committed(again.spec()).last() == Some(&30),
        "{:?}",
        committed(again.spec())
    );
    Ok(())
}

/// A worker stuck in its restore (a store without timeouts) keeps heartbeating but never trains:
/// it is evicted after the progress timeout, and the others go on without it.
#[test]
fn a_wedged_worker_is_evicted() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut s = spec(dir.path(), 3, 30, 5, 4, 2);
    s.min_workers = 2;
    s.join_timeout = Duration::from_secs(2);
    s.progress_timeout = Duration::from_secs(5);
    s.stall_timeout = Duration::from_secs(90);
    let mut cluster = LocalCluster::start(s)?;
    wait_for(&mut cluster, Duration::from_secs(120), "a commit", |s| {
        !committed(s).is_empty()
    })?;
    // Worker 2 restarts with a restore that hangs for two minutes.
    cluster.kill_worker(2)?;
    cluster.start_worker_with(2, &[("FAILPOINTS", "restore=sleep(120000)")])?;
    let started = Instant::now();
    wait_for(
        &mut cluster,
        Duration::from_secs(90),
        "the job's last step",
        |s| committed(s).last() == Some(&30),
    )?;
    ensure!(
        started.elapsed() < Duration::from_secs(90),
        "the job waited for the wedged worker"
    );
    let coordinator = std::fs::read_to_string(cluster.spec().log_file("coordinator"))?;
    ensure!(
        coordinator.contains("made no progress"),
        "no eviction in the coordinator's log"
    );
    cluster.stop(Duration::from_secs(5));
    Ok(())
}

/// The checkpoint store (S3) is down for four seconds while a new generation restores: the
/// restore retries through the outage instead of failing the workers.
#[test]
fn a_short_store_outage_during_a_restore_is_not_fatal() -> anyhow::Result<()> {
    let _serial = serial();
    let moto = MotoServer::start("fourm-outage").map_err(anyhow::Error::msg)?;
    let target = moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .context("moto address")?;
    let proxy = FlakyProxy::start(target)?;
    let dir = tempfile::tempdir()?;
    let mut s = spec(dir.path(), 2, 30, 5, 4, 2);
    s.join_timeout = Duration::from_secs(2);
    s.checkpoint_url = Some(moto.url("ckpt"));
    s.env = moto
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "AWS_ENDPOINT_URL" {
                (k, proxy.endpoint())
            } else {
                (k, v)
            }
        })
        .collect();
    let mut cluster = LocalCluster::start(s)?;
    wait_for(&mut cluster, Duration::from_secs(120), "a commit", |s| {
        !committed(s).is_empty()
    })?;
    // A restart of worker 1 makes both restore, with the store gone.
    proxy.set_down(true);
    cluster.kill_worker(1)?;
    cluster.start_worker(1)?;
    std::thread::sleep(Duration::from_secs(4));
    proxy.set_down(false);
    finish(&mut cluster, Duration::from_secs(180))?;
    ensure!(committed(cluster.spec()).last() == Some(&30));
    let _ = checkpoint_store(cluster.spec())?;
    Ok(())
}

/// A job that cannot make progress (its only worker fails every upload) fails loudly after
/// `job.max_restarts`: the coordinator and the worker exit with an error that says why.
#[test]
fn a_job_that_cannot_progress_fails_loudly() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut s = spec(dir.path(), 1, 10, 5, 4, 2);
    s.max_restarts = 2;
    s.env = vec![("FAILPOINTS".into(), "checkpoint-upload=return".into())];
    let mut cluster = LocalCluster::start(s)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exits = Vec::new();
    while exits.len() < 2 && Instant::now() < deadline {
        exits.extend(cluster.poll());
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(exits.len() == 2, "the job did not end: {exits:?}");
    ensure!(
        exits.iter().all(|e| !e.status.success()),
        "both must fail: {exits:?}"
    );
    let coordinator = std::fs::read_to_string(cluster.spec().log_file("coordinator"))?;
    ensure!(
        coordinator.contains("job.max_restarts"),
        "the coordinator does not say why: {}",
        cluster.log_tail("coordinator", 10)
    );
    Ok(())
}
