//! Multi-process tests: a real coordinator and real workers (`fourm coordinator`, `fourm worker`)
//! as child processes on the CPU backend, the `debug` model, a small synthetic dataset, and hard
//! timeouts. The tests run one at a time: they share this machine's cores.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{
    EXE, SAMPLES, audited, check_exactly_once, checkpoint_params, committed, finish, latest_step,
    serial, spec, wait_for,
};
use fourm::launch::cluster::LocalCluster;
use fourm::launch::progress::{loss_curve, read_all};
use fourm_worker::metrics::MetricsLine;

fn mean(xs: &[(u64, f64)]) -> f64 {
    xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64
}

#[test]
fn two_workers_lower_the_loss_and_hold_identical_parameters() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut spec = spec(dir.path(), 2, 30, 10, 4, 2);
    spec.param_digest = true;
    let mut cluster = LocalCluster::start(spec)?;
    finish(&mut cluster, Duration::from_secs(240))?;
    let spec = cluster.spec();

    let curve = loss_curve(&read_all(spec));
    ensure!(curve.len() == 30, "expected 30 steps, got {}", curve.len());
    let (head, tail) = (mean(&curve[..5]), mean(&curve[25..]));
    ensure!(
        tail < head - 0.3,
        "the loss did not fall: {head:.4} -> {tail:.4}"
    );

    let mut digests: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let lines: Vec<MetricsLine> = read_all(spec);
    for l in &lines {
        digests
            .entry(l.step)
            .or_default()
            .insert(l.params_sha256.clone().context("no digest")?);
    }
    ensure!(
        lines.len() == 60,
        "expected 2 ranks x 30 lines, got {}",
        lines.len()
    );
    for (step, d) in &digests {
        ensure!(d.len() == 1, "replicas differ after step {step}: {d:?}");
    }
    ensure!(committed(spec) == vec![10, 20, 30]);
    Ok(())
}

/// The generations that committed a checkpoint.
fn generations(spec: &fourm::launch::cluster::ClusterSpec) -> anyhow::Result<BTreeSet<u64>> {
    Ok(common::log(spec)?
        .commits
        .iter()
        .map(|c| c.generation)
        .collect())
}

#[test]
fn one_worker_with_twice_the_batch_equals_two_workers() -> anyhow::Result<()> {
    let _serial = serial();
    // Rank r of two reads queue entry r; one rank mixing two entries reads both, one sample of
    // each in turn: the global batch of step 1 is the same samples either way.
    let run = |workers: u32, batch: usize, mix: usize| -> anyhow::Result<_> {
        let dir = tempfile::tempdir()?;
        let mut s = spec(dir.path(), workers, 1, 1, batch, mix);
        s.audit = true;
        let mut cluster = LocalCluster::start(s)?;
        finish(&mut cluster, Duration::from_secs(120))?;
        let samples: BTreeSet<String> = audited(cluster.spec())?.into_keys().collect();
        let params = checkpoint_params(cluster.spec(), 1)?;
        let loss = loss_curve(&read_all(cluster.spec()))[0].1;
        Ok((samples, params, loss))
    };
    let (one_samples, one, one_loss) = run(1, 8, 2)?;
    let (two_samples, two, two_loss) = run(2, 4, 1)?;
    ensure!(one_samples.len() == 8, "{one_samples:?}");
    ensure!(
        one_samples == two_samples,
        "the global batches differ: {one_samples:?} vs {two_samples:?}"
    );
    ensure!(
        (one_loss - two_loss).abs() < 1e-5,
        "loss {one_loss} vs {two_loss}"
    );
    ensure!(one.keys().eq(two.keys()));
    let mut worst = 0f32;
    for (name, a) in &one {
        let b = &two[name];
        for (x, y) in a.iter().zip(b) {
            let d = (x - y).abs() / (1.0 + x.abs());
            worst = worst.max(d);
        }
    }
    ensure!(worst < 1e-5, "parameters differ by {worst}");
    Ok(())
}

#[test]
fn every_sample_of_an_epoch_is_in_exactly_one_committed_step() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    // 2 ranks x 4 samples x 36 steps: one epoch of 256 samples and part of the next.
    let mut spec = spec(dir.path(), 2, 36, 12, 4, 2);
    spec.audit = true;
    let mut cluster = LocalCluster::start(spec)?;
    finish(&mut cluster, Duration::from_secs(240))?;
    let spec = cluster.spec();
    let n = check_exactly_once(spec)?;
    ensure!(n == 36 * 8, "{n} samples audited, expected {}", 36 * 8);
    let seen = audited(spec)?;
    let epoch0 = seen.keys().filter(|k| k.starts_with("0/")).count();
    ensure!(
        epoch0 == SAMPLES,
        "epoch 0 has {epoch0} of {SAMPLES} samples"
    );
    Ok(())
}

#[test]
fn a_killed_worker_is_recovered_from_the_last_checkpoint() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut spec = spec(dir.path(), 3, 40, 5, 4, 2);
    spec.audit = true;
    spec.min_workers = 2;
    spec.join_timeout = Duration::from_secs(2);
    let mut cluster = LocalCluster::start(spec)?;
    wait_for(&mut cluster, Duration::from_secs(120), "step 12", |s| {
        latest_step(s) >= 12
    })?;
    let before = generations(cluster.spec())?;
    let killed_at = Instant::now();
    cluster.kill_worker(2)?;
    wait_for(
        &mut cluster,
        Duration::from_secs(120),
        "a commit of a generation formed after the kill",
        |s| generations(s).is_ok_and(|g| !g.is_subset(&before)),
    )?;
    let recovery = killed_at.elapsed();
    eprintln!(
        "recovery after kill -9: {:.2} s from the kill to the first checkpoint committed by a \
         generation formed after it",
        recovery.as_secs_f64()
    );
    finish(&mut cluster, Duration::from_secs(240))?;
    let spec = cluster.spec();
    ensure!(committed(spec).last() == Some(&40));
    let worlds: BTreeSet<u32> = read_all(spec).iter().map(|l| l.world).collect();
    ensure!(worlds.contains(&2), "no generation of 2 ranks: {worlds:?}");
    let n = check_exactly_once(spec)?;
    ensure!(n > 0);
    Ok(())
}

#[test]
fn workers_survive_a_coordinator_restart() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut spec = spec(dir.path(), 2, 40, 5, 4, 2);
    spec.audit = true;
    let mut cluster = LocalCluster::start(spec)?;
    wait_for(
        &mut cluster,
        Duration::from_secs(120),
        "a first commit",
        |s| !committed(s).is_empty() && latest_step(s) >= 12,
    )?;
    let before = generations(cluster.spec())?;
    cluster.kill_coordinator()?;
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    cluster.start_coordinator()?;
    wait_for(
        &mut cluster,
        Duration::from_secs(120),
        "a commit of a generation formed after the restart",
        |s| generations(s).is_ok_and(|g| !g.is_subset(&before)),
    )?;
    eprintln!(
        "after a coordinator restart: {:.2} s from the restart to the first checkpoint committed \
         by a generation it formed",
        restarted.elapsed().as_secs_f64()
    );
    finish(&mut cluster, Duration::from_secs(240))?;
    let spec = cluster.spec();
    ensure!(committed(spec).last() == Some(&40));
    let coordinator_log = std::fs::read_to_string(spec.log_file("coordinator"))?;
    ensure!(coordinator_log.matches("coordinator serving").count() == 2);
    check_exactly_once(spec)?;
    Ok(())
}

#[test]
fn a_resumed_run_continues_exactly_as_an_uninterrupted_one() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let job = |name: &str| spec(&dir.path().join(name), 2, 60, 30, 8, 2);
    let mut whole = LocalCluster::start(job("whole"))?;
    finish(&mut whole, Duration::from_secs(240))?;
    let expected = loss_curve(&read_all(whole.spec()));

    // Stop (kill -9, as a crash would) once the step-30 checkpoint is committed, then start the
    // same job again: it resumes from that checkpoint.
    let mut first = LocalCluster::start(job("resumed"))?;
    wait_for(
        &mut first,
        Duration::from_secs(120),
        "the step-30 commit",
        |s| committed(s).contains(&30),
    )?;
    first.kill_worker(0)?;
    first.kill_worker(1)?;
    first.kill_coordinator()?;
    let stopped_at = latest_step(first.spec());
    ensure!(
        !committed(first.spec()).contains(&60),
        "the first run finished before it could be stopped"
    );
    drop(first);
    let mut second = LocalCluster::start(job("resumed"))?;
    finish(&mut second, Duration::from_secs(240))?;
    let got = loss_curve(&read_all(second.spec()));
    ensure!(got.len() == 60 && expected.len() == 60);
    ensure!(stopped_at >= 30);
    for ((s, a), (_, b)) in expected.iter().zip(&got) {
        ensure!(
            a.to_bits() == b.to_bits(),
            "step {s}: uninterrupted loss {a}, resumed {b}"
        );
    }
    Ok(())
}

/// Runs `fourm generate` with `args`; returns its stdout (the files written).
fn generate(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(EXE).arg("generate").args(args).output()?;
    ensure!(
        out.status.success(),
        "fourm generate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Width and height of a PNG file.
fn png_size(path: &Path) -> anyhow::Result<(u32, u32)> {
    let bytes = std::fs::read(path)?;
    ensure!(
        bytes.len() > 24 && &bytes[1..4] == b"PNG",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Ok((be(16), be(20)))
}

#[test]
fn generate_runs_any_to_any_on_a_trained_checkpoint() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let mut cluster = LocalCluster::start(spec(dir.path(), 2, 10, 10, 4, 2))?;
    finish(&mut cluster, Duration::from_secs(120))?;
    let ckpt = cluster.spec().checkpoint_dir();
    let ckpt = ckpt.to_str().context("utf-8")?;
    let caption = dir.path().join("caption.txt");
    std::fs::write(&caption, "a small red sphere behind a large yellow cube\n")?;
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let cond = format!("caption={}", caption.display());

    // caption -> rgb, sampled: the same seed gives the same picture.
    for o in ["o1", "o1b"] {
        generate(&[
            "--checkpoint",
            ckpt,
            "--condition",
            &cond,
            "--target",
            "tok_rgb@32",
            "--temperature",
            "1.0",
            "--seed",
            "7",
            "--out",
            &out(o),
        ])?;
    }
    let rgb = dir.path().join("o1/tok_rgb_32.png");
    ensure!(png_size(&rgb)? == (32, 32));
    for f in ["tok_rgb_32.png", "tok_rgb_32.npy"] {
        ensure!(
            std::fs::read(dir.path().join("o1").join(f))?
                == std::fs::read(dir.path().join("o1b").join(f))?,
            "{f} differs between two runs with the same seed"
        );
    }
    let npy = std::fs::read(dir.path().join("o1/tok_rgb_32.npy"))?;
    ensure!(
        String::from_utf8_lossy(&npy).contains("(1, 16)"),
        "token grid shape"
    );

    // rgb -> depth, then rgb + depth -> caption, from the picture written above.
    let cond = format!("tok_rgb@32={}", rgb.display());
    let listed = generate(&[
        "--checkpoint",
        ckpt,
        "--condition",
        &cond,
        "--target",
        "tok_depth@32",
        "--target",
        "caption",
        "--out",
        &out("o2"),
    ])?;
    // depth: tokens, raw picture, preview; caption: tokens, text.
    ensure!(listed.lines().count() == 5, "{listed}");
    ensure!(png_size(&dir.path().join("o2/tok_depth_32.png"))? == (32, 32));
    ensure!(dir.path().join("o2/caption.txt").exists());
    ensure!(dir.path().join("o2/caption.npy").exists());

    // Bad input is an error that names it.
    let bad = Command::new(EXE)
        .args([
            "generate",
            "--checkpoint",
            ckpt,
            "--target",
            "tok_nothing@32",
        ])
        .args(["--out", &out("o3")])
        .output()?;
    ensure!(!bad.status.success());
    ensure!(String::from_utf8_lossy(&bad.stderr).contains("tok_nothing@32"));
    Ok(())
}
