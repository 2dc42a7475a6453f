//! Times one 4M training step (forward, backward, AdamW) on the CPU backend, or on a GPU with
//! `--device cuda` (`--preset fm_base_12e_12d_swiglu_nobias --modalities mod7` is 4M-B).
//!
//! Default shape: the spec's perf config (dim 256, 6 + 6 blocks, 8 heads, SwiGLU, three 16×16
//! token modalities with 1024 codes and a 32-token caption, 128 input + 128 target tokens,
//! batch 8, f32 on the CPU and bf16 mixed precision on a GPU (`--precision`), random masks). Prints the median of `--steps` steps after `--warmup`, tokens/s,
//! achieved GFLOP/s and the median time of each phase. The optimizer phase is what ml-4m's
//! `perf_step.py` times as `gradnorm+adamw`: the global gradient norm, then AdamW (here with the
//! flat parameter vector gathered from the model and written back).

use std::time::Instant;

use clap::{Parser, ValueEnum};
use fourm_model::bench::{BatchShape, BenchDevice, median};
use fourm_model::optim::{AdamW, AdamWConfig, ParamLayout, global_norm};
use fourm_model::{
    ArchVariant, FourMConfig, Modalities, Precision, StepOptions, StepShape, random_batch,
};

#[derive(Parser)]
#[command(about = "Benchmark one fourm training step on the CPU (Flex) backend")]
struct Args {
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[command(flatten)]
    shape: BatchShape,
    /// Micro-batches run concurrently (default: one per core on the CPU, 1 on a GPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Model: a preset (`perf`, `debug`, `tiny` … `xlarge`, SwiGLU without biases) or an ml-4m
    /// name such as `fm_base_12e_12d_swiglu_nobias`.
    #[arg(long, default_value = "perf")]
    preset: String,
    /// Modality set: `perf` (three 16×16 token grids and a caption) or `mod7` (ml-4m's 4M-7 at
    /// 224 px).
    #[arg(long, value_enum, default_value_t = ModalitySet::Perf)]
    modalities: ModalitySet,
    /// Arithmetic of the matrix products: `f32`, or `bf16` mixed precision (default: `bf16` on
    /// a GPU, as ml-4m trains under `torch.autocast(bfloat16)`; `f32` on the CPU).
    #[arg(long)]
    precision: Option<Precision>,
    /// Where the step runs.
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    device: BenchDevice,
    /// GPU index (with `--device cuda`).
    #[arg(long, default_value_t = 0)]
    device_index: usize,
    /// Peak TFLOP/s of the device; prints the model FLOPs utilisation against it.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// The GPU's name (as `nvidia-smi` gives it): its known bf16 peak stands in for
    /// `--peak-tflops`.
    #[arg(long)]
    gpu_name: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModalitySet {
    Perf,
    Mod7,
}

// The step allocates and frees large buffers every step: glibc returns them to the kernel and
// pays page faults each time; mimalloc with its purge delay off keeps them (see
// `fourm_model::allocator`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    fourm_model::allocator::keep_freed_memory();
    let args = Args::parse();
    let config = FourMConfig::from_preset(&args.preset, ArchVariant::SwigluNobias)?;
    let modalities = match args.modalities {
        ModalitySet::Perf => Modalities::perf(),
        ModalitySet::Mod7 => Modalities::mod7_224(),
    };
    let device = args.device.device(args.device_index)?.autodiff();
    let mut model = config.init(&modalities, 0, &device)?;
    let layout = ParamLayout::new(&model);
    let mut adamw = AdamW::new(AdamWConfig::default(), &layout, &device.clone().inner());
    let precision = args.precision.unwrap_or(match args.device {
        BenchDevice::Cpu => Precision::F32,
        BenchDevice::Cuda => Precision::Bf16,
    });
    let options = StepOptions {
        precision,
        ..StepOptions::new(args.shape.inputs, args.shape.targets)
    };
    let batches: Vec<_> = (0..4)
        .map(|i| {
            random_batch(
                &modalities,
                args.shape.batch,
                args.shape.inputs,
                args.shape.targets,
                i,
            )
        })
        .collect();

    let (mut total, mut fwd_bwd, mut opt) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_norm = 0.0;
    let (mut flatten, mut update) = (Vec::new(), Vec::new());
    let threads = args
        .threads
        .unwrap_or_else(|| args.device.default_threads());
    let mut last_loss = 0.0;
    for step in 0..args.warmup + args.steps {
        let batch = &batches[step % batches.len()];
        let t0 = Instant::now();
        let step_grads = model.gradients(&layout, batch, &options, threads)?;
        last_loss = step_grads.loss;
        let t2 = Instant::now();
        // As ml-4m's step: the global gradient norm (for clipping and logging), then AdamW.
        let grad_norm = global_norm(&step_grads.grads);
        let flat = layout.flatten_params(&model);
        let t_flat = Instant::now();
        let params = adamw.step(flat, step_grads.grads, 1e-4);
        let t_update = Instant::now();
        last_norm = grad_norm;
        model = layout.unflatten_into(model, params);
        let _ = model.mask_token.val().sum().into_scalar::<f32>();
        let t3 = Instant::now();
        if step >= args.warmup {
            total.push((t3 - t0).as_secs_f64());
            fwd_bwd.push((t2 - t0).as_secs_f64());
            opt.push((t3 - t2).as_secs_f64());
            flatten.push((t_flat - t2).as_secs_f64());
            update.push((t_update - t_flat).as_secs_f64());
        }
    }
    let vocab =
        modalities.targets().map(|s| s.vocab_size).sum::<usize>() / modalities.targets().count();
    let shape = StepShape {
        batch: args.shape.batch,
        encoder_tokens: args.shape.inputs,
        decoder_tokens: args.shape.targets,
        mean_vocab: vocab,
    };
    let step = median(total);
    let tokens = (args.shape.batch * (args.shape.inputs + args.shape.targets)) as f64;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "model: dim {} enc {} dec {} heads {} params {}",
        config.dim,
        config.encoder_depth,
        config.decoder_depth,
        config.num_heads,
        model.num_trainable()
    );
    println!(
        "step: batch {} inputs {} targets {} {precision} (loss {last_loss:.4}, grad norm \
         {last_norm:.3})",
        args.shape.batch, args.shape.inputs, args.shape.targets
    );
    println!(
        "median step        {:8.1} ms  over {} steps after {} warm-up",
        step * 1e3,
        args.steps,
        args.warmup
    );
    println!(
        "  forward+backward {:8.1} ms  ({threads} concurrent micro-batches)",
        median(fwd_bwd) * 1e3
    );
    println!("  optimizer        {:8.1} ms", median(opt) * 1e3);
    println!(
        "    grad norm + flatten params {:5.1} ms",
        median(flatten) * 1e3
    );
    println!("    AdamW          {:8.1} ms", median(update) * 1e3);
    println!("tokens/s           {:8.0}", tokens / step);
    println!(
        "GFLOP/s            {:8.1}  ({:.1} GFLOP per step)",
        config.train_flops(shape) / step / 1e9,
        config.train_flops(shape) / 1e9
    );
    let peak = args.peak_tflops.or_else(|| {
        args.gpu_name
            .as_deref()
            .and_then(fourm_model::bench::known_peak_tflops)
    });
    if let Some(peak) = peak {
        let mfu = config.train_flops(shape) / step / (peak * 1e12);
        println!(
            "MFU                {:8.1} %  (peak {peak} TFLOP/s)",
            mfu * 1e2
        );
    }
    println!(
        "threads            {:8}  load average {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load.trim()
    );
    Ok(())
}
