//! bf16 mixed precision through the whole local launch: 100 steps of `fourm launch` (the quick
//! start's model, data and schedule; a smaller synthetic dataset) with `precision = "bf16"` end
//! within 2 % of the same run in `f32`, and the two runs do differ (the setting reaches the step).

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};
use common::{EXE, serial};
use fourm::launch::progress::loss_curve;
use fourm_worker::metrics::read_metrics;

const STEPS: u64 = 100;

/// Rank 0's loss per step of a 100-step launch in `dir` with `[train] precision = precision`.
fn launch(dir: &Path, precision: &str) -> anyhow::Result<Vec<(u64, f64)>> {
    let config = dir.join(format!("{precision}.toml"));
    std::fs::write(
        &config,
        format!(
            "[launch]\ncheckpoint_every = {STEPS}\nlog_every = 1\n\
             [synthetic]\nsamples = 512\nshard_samples = 128\nval_samples = 8\n\
             [train]\nprecision = \"{precision}\"\n\
             [eval]\nevery = 0\n"
        ),
    )?;
    let out = dir.join(precision);
    let status = Command::new(EXE)
        .args(["launch", "--steps", &STEPS.to_string(), "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()?;
    ensure!(
        status.status.success(),
        "launch ({precision}) failed:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let lines = read_metrics(&out.join("metrics").join("worker-0.jsonl"))?;
    Ok(loss_curve(&lines))
}

/// The mean loss of the last ten steps.
fn final_loss(curve: &[(u64, f64)]) -> anyhow::Result<f64> {
    let tail: Vec<f64> = curve
        .iter()
        .filter(|(s, _)| *s + 10 >= STEPS)
        .map(|(_, l)| *l)
        .collect();
    ensure!(tail.len() >= 5, "too few logged steps: {curve:?}");
    Ok(tail.iter().sum::<f64>() / tail.len() as f64)
}

#[test]
fn a_bf16_launch_ends_within_two_percent_of_f32() -> anyhow::Result<()> {
    let _serial = serial();
    let dir = tempfile::tempdir()?;
    let f32_curve = launch(dir.path(), "f32")?;
    let bf16_curve = launch(dir.path(), "bf16")?;
    let (a, b) = (final_loss(&f32_curve)?, final_loss(&bf16_curve)?);
    let first = f32_curve.first().context("a logged step")?.1;
    let widest = f32_curve
        .iter()
        .zip(&bf16_curve)
        .map(|((_, x), (_, y))| (x - y).abs())
        .fold(0.0, f64::max);
    println!(
        "loss after {STEPS} steps: f32 {a:.5}, bf16 {b:.5} (from {first:.4}); \
         widest step difference {widest:.2e}"
    );
    ensure!(a < 0.9 * first, "the f32 run did not learn: {first} -> {a}");
    ensure!((b - a).abs() <= 0.02 * a, "bf16 {b} vs f32 {a}");
    ensure!(
        f32_curve != bf16_curve,
        "identical curves: the precision setting did not reach the step"
    );
    Ok(())
}
