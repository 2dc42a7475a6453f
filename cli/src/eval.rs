//! `fourm eval`: what a checkpoint learned, on a held-out split: the loss per modality with fixed
//! masks, and cross-modal tasks generated with the model's own sampler and scored against the
//! ground truth next to their trivial baselines. Writes a table on stdout, `eval.json` and
//! `samples.png` (condition, generation, ground truth per task).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::Device;
use clap::Args;
use fourm_data::{DatasetStore, StoreConfig};
use fourm_eval::{EvalSet, Evaluator, Report, RunOptions, Task, heldout_loss, sample_grid};
use fourm_model::StepOptions;
use fourm_worker::validation::heldout_batches;

use crate::generate::load;

/// `fourm eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint: a committed step folder or a checkpoint root (its newest commit).
    #[arg(long)]
    pub checkpoint: String,
    /// Dataset (default: the one the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<String>,
    /// Split of the dataset to evaluate on (a folder under it; empty: the dataset itself).
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Output folder (eval.json, samples.png).
    #[arg(long, default_value = "eval")]
    pub out: PathBuf,
    /// Held-out samples.
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// A task SOURCE->TARGET (repeatable; default: rgb->depth, rgb->semseg, rgb->normal,
    /// rgb->caption, caption->rgb, rgb->det).
    #[arg(long = "task")]
    pub tasks: Vec<Task>,
    /// MaskGIT steps of token-grid targets.
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Samples generated at once.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `fourm eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let report = crate::runtime()?.block_on(evaluate(&args))?;
    print!("{}", report.table());
    Ok(ExitCode::SUCCESS)
}

/// Evaluates a checkpoint; writes `eval.json` and `samples.png` under `args.out`.
pub async fn evaluate(args: &EvalArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    let device = Device::flex();
    let loaded = load::load(&args.checkpoint, args.data.as_deref(), &device).await?;
    let data = DatasetStore::open(&loaded.config.data.dataset, StoreConfig::default())
        .with_context(|| format!("opening {}", loaded.config.data.dataset))?;
    let split = match args.split.as_str() {
        "" => data,
        s => data.child(s),
    };
    let set = EvalSet::load(&split, args.samples)
        .await
        .with_context(|| format!("reading the held-out split {}", split.url()))?;
    eprintln!(
        "checkpoint {} (step {}), {} samples of {}",
        loaded.folder,
        loaded.step,
        set.samples.len(),
        split.url()
    );
    let all: Vec<usize> = (0..set.samples.len()).collect();
    let builder = loaded.data.builder()?;
    let batches = heldout_batches(&builder, &set, &all, args.batch)?;
    let cfg = &loaded.config;
    let options = StepOptions {
        loss: cfg.train.loss,
        ..StepOptions::new(cfg.data.input_tokens, cfg.data.target_tokens)
    };
    let loss = heldout_loss(&loaded.model, &batches, &options)?;
    let tasks = if args.tasks.is_empty() {
        Task::defaults()
    } else {
        args.tasks.clone()
    };
    let run = RunOptions {
        batch: args.batch,
        steps: args.steps,
        seed: args.seed,
    };
    let evaluator = Evaluator::new(&loaded.model, &loaded.specials, &set, run);
    let mut outcomes = Vec::new();
    for task in &tasks {
        let t = Instant::now();
        outcomes.push(evaluator.run(task, &all)?);
        eprintln!("{task}: {:.1} s", t.elapsed().as_secs_f64());
    }
    let report = Report::new(
        loaded.folder.clone(),
        loaded.step,
        &set,
        split.url().to_string(),
        &loss,
        &outcomes,
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = args.out.join("eval.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let png = args.out.join("samples.png");
    std::fs::write(&png, sample_grid(&set, &outcomes, 3)?)
        .with_context(|| format!("writing {}", png.display()))?;
    eprintln!(
        "wrote {} and {} ({} rows: {}) in {:.1} s",
        json.display(),
        png.display(),
        tasks.len(),
        tasks
            .iter()
            .map(Task::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}
