//! Measures what one rank holds (resident memory, `/proc/self/status`) next to what the planner
//! (`fourm plan-memory`) says, for the small presets on the CPU backend:
//!
//! - parameters: the growth of RSS when the model is built and its (lazily initialised) tensors
//!   are first read;
//! - optimizer: the growth when AdamW's state is created for a 1/`world` shard, then for the
//!   whole vector, each written by one update (both kept alive);
//! - step: the peak RSS of one forward+backward of one micro-batch over the RSS before it, next
//!   to the planner's gradients + activations.
//!
//! Each preset runs in a child process of its own, with glibc's mmap threshold fixed
//! (`MALLOC_MMAP_THRESHOLD_`), so that large buffers are returned to the kernel when freed and
//! one measurement does not reuse the pages of another. Linux only (reads `/proc/self/status`,
//! resets the peak through `/proc/self/clear_refs`).

use std::fs;

use burn::tensor::{Device, Tensor};
use clap::Parser;
use fourm_model::memory::{PlanInput, Precision, plan_memory};
use fourm_model::optim::{AdamW, AdamWConfig, ParamLayout};
use fourm_model::{ArchVariant, FourMConfig, Modalities, StepOptions, random_batch};

#[derive(Parser)]
#[command(about = "Measured per-rank memory of the small presets next to the planner's figures")]
struct Args {
    /// Ranks the optimizer state is sharded over.
    #[arg(long, default_value_t = 4)]
    world: usize,
    /// Samples of the measured micro-batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Encoder (input) tokens per sample.
    #[arg(long, default_value_t = 128)]
    inputs: usize,
    /// Decoder (target) tokens per sample.
    #[arg(long, default_value_t = 128)]
    targets: usize,
    /// Presets to measure (debug, perf, tiny, small).
    #[arg(long, value_delimiter = ',', default_value = "perf,tiny,small")]
    presets: Vec<String>,
}

/// `VmRSS` and `VmHWM` (peak) of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn reset_peak() {
    // "5" resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Set in the child process that measures one preset.
const CHILD: &str = "FOURM_BENCH_MEMORY_CHILD";

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn row(what: &str, measured: u64, planned: u64) {
    let dev = (measured as f64 / planned.max(1) as f64 - 1.0) * 100.0;
    println!(
        "  {what:<28} measured {:>9.1} MiB  planned {:>9.1} MiB  ({dev:+.1} %)",
        mib(measured),
        mib(planned)
    );
}

fn preset(name: &str) -> Result<FourMConfig, String> {
    Ok(match name {
        "debug" => FourMConfig::debug(),
        "perf" => FourMConfig::perf(),
        "tiny" => FourMConfig::tiny(ArchVariant::SwigluNobias),
        "small" => FourMConfig::small(ArchVariant::SwigluNobias),
        other => {
            return Err(format!(
                "unknown preset `{other}` (debug, perf, tiny, small)"
            ));
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if fs::read_to_string("/proc/self/status").is_err() {
        return Err("bench-memory reads /proc/self/status: Linux only".into());
    }
    if args.presets.len() > 1 || std::env::var_os(CHILD).is_none() {
        println!(
            "modalities: perf set; micro-batch {} × ({} + {}) tokens, fp32, optimizer shard 1/{}",
            args.batch, args.inputs, args.targets, args.world
        );
        for name in &args.presets {
            preset(name)?;
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(std::env::args_os().skip(1))
                .args(["--presets", name])
                .env(CHILD, "1")
                .env("MALLOC_MMAP_THRESHOLD_", "131072")
                .status()?;
            if !status.success() {
                return Err(format!("measuring {name} failed: {status}").into());
            }
        }
        return Ok(());
    }
    let modalities = Modalities::perf();
    for name in &args.presets {
        let config = preset(name)?;
        let plan = |shard: bool| {
            plan_memory(
                &config,
                &modalities,
                PlanInput {
                    world: args.world,
                    micro_batch: args.batch,
                    encoder_tokens: args.inputs,
                    decoder_tokens: args.targets,
                    shard_optimizer: shard,
                    precision: Precision::F32,
                },
            )
        };
        let (whole, sharded) = (plan(false), plan(true));
        println!(
            "{name}: dim {} enc {} dec {}, {} trainable + {} buffer scalars",
            config.dim,
            config.encoder_depth,
            config.decoder_depth,
            whole.count.trainable,
            whole.count.buffers
        );

        let device = Device::flex().autodiff();
        let (before, _) = rss();
        let model = config.init(&modalities, 0, &device)?;
        let layout = ParamLayout::new(&model);
        drop(layout.flatten_params(&model).into_data());
        let (built, _) = rss();
        row("parameters", built - before, whole.parameters);

        let n = layout.len();
        let plain = device.clone().inner();
        // An optimizer state as training leaves it: created, then written by one update.
        let state = |range: std::ops::Range<usize>| {
            let len = range.len();
            let mut adamw = AdamW::new_range(AdamWConfig::default(), &layout, range, &plain);
            let params = adamw.step(
                Tensor::zeros([len], &plain),
                Tensor::ones([len], &plain),
                1e-3,
            );
            drop(params.into_data());
            adamw
        };
        let (before, _) = rss();
        let shard_state = state(0..n.div_ceil(args.world));
        let (after_shard, _) = rss();
        let whole_state = state(0..n);
        let (after_whole, _) = rss();
        let (m_shard, m_whole) = (after_shard - before, after_whole - after_shard);
        row("optimizer, whole", m_whole, whole.optimizer);
        row(
            &format!("optimizer, shard 1/{}", args.world),
            m_shard,
            sharded.optimizer,
        );
        println!(
            "  sharded / whole optimizer    measured {:.1} %  planned {:.1} %",
            100.0 * m_shard as f64 / m_whole.max(1) as f64,
            100.0 * sharded.optimizer as f64 / whole.optimizer as f64
        );

        let batch = random_batch(&modalities, args.batch, args.inputs, args.targets, 1);
        let options = StepOptions::new(args.inputs, args.targets);
        let (before, _) = rss();
        reset_peak();
        let grads = model.gradients(&layout, &batch, &options, 1)?;
        let (_, peak) = rss();
        row(
            "step peak (grads + acts)",
            peak.saturating_sub(before),
            whole.gradients + whole.activations,
        );
        drop((grads, shard_state, whole_state, model));
    }
    Ok(())
}
