//! `fourm launch`: a whole training job on this machine with embedded defaults: a synthetic
//! dataset written on first use, a coordinator and N workers as child processes (Flex CPU
//! backend, local folder as object store), a progress bar, Ctrl-C that stops the job cleanly (run
//! the same command again to resume from the last checkpoint), checkpoints, and a loss curve.

pub mod cluster;
pub mod config;
pub mod plot;
pub mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use fourm_synth::SynthConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use self::cluster::{ClusterSpec, LocalCluster};
use self::config::LaunchConfig;

/// `fourm launch`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Worker processes (overrides `launch.workers`).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Steps of the job (overrides `launch.steps`).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Settings merged over the embedded defaults ([launch], [synthetic], [model], [data],
    /// [train]; see `fourm launch --print-defaults`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Job folder: dataset, checkpoints, logs, metrics and the loss curve. An existing job there
    /// is resumed from its last checkpoint.
    #[arg(long, default_value = "fourm-run")]
    pub out: PathBuf,
    /// Delete the job folder's checkpoints, logs and metrics first (the dataset is kept).
    #[arg(long)]
    pub fresh: bool,
    /// Print the embedded default settings and exit.
    #[arg(long)]
    pub print_defaults: bool,
}

/// Runs `fourm launch`.
pub fn run(args: LaunchArgs) -> anyhow::Result<ExitCode> {
    if args.print_defaults {
        print!("{}", config::DEFAULTS);
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = LaunchConfig::load(args.config.as_deref())?;
    if let Some(w) = args.workers {
        config.launch.workers = w;
    }
    if let Some(s) = args.steps {
        config.launch.steps = s;
    }
    let out = args.out;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if args.fresh {
        for sub in ["checkpoints", "logs", "metrics", "audit", "config"] {
            let d = out.join(sub);
            if d.exists() {
                std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
    }
    let dataset = match config.dataset.clone() {
        Some(url) => url,
        None => synthetic_dataset(&out, &config)?,
    };
    let exe = std::env::current_exe().context("locating the fourm executable")?;
    let resuming = out.join("checkpoints").join("job.json").exists();
    let mut spec = ClusterSpec::new(exe, out.clone(), dataset, config);
    spec.min_workers = spec.workers;
    let steps = spec.config.launch.steps;
    eprintln!(
        "fourm launch: {} workers, {steps} steps, model `{}`, job folder {}{}",
        spec.workers,
        spec.config.model.preset,
        out.display(),
        if resuming {
            " (resuming from its last checkpoint)"
        } else {
            ""
        }
    );

    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone())
            .context("installing the Ctrl-C handler")?;
    }
    let started = Instant::now();
    let mut cluster = LocalCluster::start(spec)?;
    let outcome = supervise(&mut cluster, &interrupted, steps);
    let spec = cluster.spec().clone();
    match outcome {
        Ok(Supervised::Finished) => {
            cluster.stop(Duration::from_secs(10));
            summarize(&spec, started.elapsed())?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(Supervised::Interrupted) => {
            eprintln!("interrupted: stopping the workers, then the coordinator");
            cluster.stop(Duration::from_secs(20));
            eprintln!(
                "stopped; run the same command again to resume from the last checkpoint in {}",
                spec.checkpoint_dir().display()
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => {
            cluster.stop(Duration::from_secs(5));
            Err(e)
        }
    }
}

enum Supervised {
    Finished,
    Interrupted,
}

/// Shows progress until every worker has exited, a process fails, or the user interrupts.
fn supervise(
    cluster: &mut LocalCluster,
    interrupted: &AtomicBool,
    steps: u64,
) -> anyhow::Result<Supervised> {
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} step {pos}/{len} · {msg} · elapsed {elapsed} · ETA {eta}",
        )
        .context("progress bar template")?,
    );
    bar.set_message("starting");
    let quiet = bar.is_hidden();
    let mut last_printed = 0;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            bar.abandon();
            return Ok(Supervised::Interrupted);
        }
        for exit in cluster.poll() {
            if exit.name == "coordinator" || !exit.status.success() {
                bar.abandon();
                bail!(
                    "{} exited ({}); the end of its log ({}):\n{}",
                    exit.name,
                    exit.status,
                    cluster.spec().log_file(&exit.name).display(),
                    cluster.log_tail(&exit.name, 15)
                );
            }
        }
        let lines = progress::read_all(cluster.spec());
        if let Some(p) = progress::progress(&lines) {
            bar.set_position(p.step);
            let validation = progress::latest_eval(&lines)
                .and_then(|(_, m)| m.get("held_out/total"))
                .map_or(String::new(), |v| format!(" · held-out {v:.3}"));
            bar.set_message(format!(
                "loss {:.4}{validation} · {:.0} tokens/s · {} ranks",
                p.loss, p.tokens_per_s, p.world
            ));
            if quiet
                && p.step > last_printed
                && (p.step >= last_printed + steps.div_ceil(10) || p.step == steps)
            {
                last_printed = p.step;
                eprintln!(
                    "step {}/{steps} loss {:.4} {:.0} tokens/s",
                    p.step, p.loss, p.tokens_per_s
                );
            }
        }
        if cluster.running_workers() == 0 {
            bar.finish();
            return Ok(Supervised::Finished);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prints the outcome and draws the loss curve.
fn summarize(spec: &ClusterSpec, elapsed: Duration) -> anyhow::Result<()> {
    let lines = progress::read_all(spec);
    let curve = progress::loss_curve(&lines);
    let (Some(first), Some(last)) = (curve.first(), curve.last()) else {
        bail!(
            "the workers exited without training a step; see {}",
            spec.dir.join("logs").display()
        );
    };
    let picture = spec.dir.join("loss.svg");
    let title = format!("fourm launch: {} workers", spec.workers);
    plot::draw_loss_curve(&picture, &title, &curve, &progress::modality_curves(&lines))?;
    let eval = progress::eval_curves(&lines);
    let eval_picture = spec.dir.join("eval.svg");
    if !eval.is_empty() {
        plot::draw_eval_curves(&eval_picture, &title, &eval)?;
    }
    let head: f64 = mean_loss(&curve[..curve.len().min(10)]);
    let tail: f64 = mean_loss(&curve[curve.len().saturating_sub(10)..]);
    println!(
        "trained steps {}..={} in {:.1} s: loss {head:.4} (first 10 steps) -> {tail:.4} (last 10)",
        first.0,
        last.0,
        elapsed.as_secs_f64()
    );
    println!(
        "throughput {:.0} tokens/s (all ranks, after warm-up)",
        progress::mean_tokens_per_s(&lines, 5)
    );
    println!("checkpoints  {}", spec.checkpoint_dir().display());
    println!("loss curve   {}", picture.display());
    if let Some((step, metrics)) = progress::latest_eval(&lines) {
        println!("validation   {} (step {step})", eval_picture.display());
        for (m, v) in metrics {
            println!("  {m:<36} {v:.4}");
        }
    }
    println!("logs         {}", spec.dir.join("logs").display());
    Ok(())
}

fn mean_loss(points: &[(u64, f64)]) -> f64 {
    points.iter().map(|p| p.1).sum::<f64>() / points.len().max(1) as f64
}

/// Fails unless the synthetic dataset in `dir` was written with `wanted` (a job folder from
/// before a change of `[synthetic]` would otherwise train on the old scenes without a word).
fn check_written_with(dir: &Path, wanted: &SynthConfig) -> anyhow::Result<()> {
    let path = dir.join(fourm_synth::dataset::MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let stored = fourm_synth::dataset::written_config(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    let (written, configured) = (
        serde_json::to_value(&stored)?,
        serde_json::to_value(wanted)?,
    );
    let differences: Vec<String> = configured
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| written.get(key.as_str()) != Some(value))
        .map(|(key, value)| {
            let old = written
                .get(key.as_str())
                .unwrap_or(&serde_json::Value::Null);
            format!("{key} {old} (configured: {value})")
        })
        .collect();
    if differences.is_empty() {
        return Ok(());
    }
    bail!(
        "the dataset in {} was written with other settings: {}; delete that folder to write it \
         anew with [synthetic] as configured, or set [synthetic] to match it",
        dir.display(),
        differences.join(", ")
    )
}

/// `<out>/data`, written on first use.
fn synthetic_dataset(out: &Path, config: &LaunchConfig) -> anyhow::Result<String> {
    let dir = out.join("data");
    let url = dir
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", dir.display()))?
        .to_string();
    let s = &config.synthetic;
    let defaults = crate::data::SynthArgs::defaults(url.clone());
    let args = crate::data::SynthArgs {
        out: url.clone(),
        samples: s.samples,
        shard_samples: s.shard_samples,
        resolution: s.resolution,
        seed: s.seed,
        val_samples: s.val_samples,
        min_objects: s.min_objects.unwrap_or(defaults.min_objects),
        max_objects: s.max_objects.unwrap_or(defaults.max_objects),
        zoom: s.zoom.unwrap_or(defaults.zoom),
        ..defaults
    };
    if dir.join("index.json").exists() {
        check_written_with(&dir, &args.config())?;
        return Ok(url);
    }
    eprintln!(
        "writing a synthetic dataset of {} samples to {} (first run only)",
        s.samples,
        dir.display()
    );
    crate::runtime()?.block_on(crate::data::run_synth(args))?;
    Ok(url)
}
