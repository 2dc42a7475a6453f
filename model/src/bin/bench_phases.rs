//! Where a training step spends its time, phase by phase, on the CPU (Flex) backend.
//!
//! Times, forward and backward separately, each kind of sub-layer of the perf model on inputs of
//! the step's shapes (batch 8, 128 encoder and 128 decoder tokens, dim 256, 8 heads, SwiGLU):
//! encoder self-attention, encoder MLP, decoder self-attention (with a `[b, 1, m, m]` mask bias),
//! decoder cross-attention, decoder MLP, each summed over the 6 blocks; then the whole forward
//! (`FourM::forward`: token selection, embeddings, blocks, heads and loss) and its backward. What
//! the whole has beyond the blocks is embeddings, selection, context projection, heads and loss.
//! One batch runs on the backend's threads (bench-step runs concurrent micro-batches instead).
//! `tools/bench_phases_ml4m.py` times the same sub-layers of ml-4m's blocks.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use fourm_model::bench::{BatchShape, median};
use fourm_model::layers::{Block, DecoderBlock, MASKED};
use fourm_model::{FourMConfig, Modalities, StepOptions, random_batch};

#[derive(Parser)]
#[command(about = "Time each phase of a fourm training step on the CPU (Flex) backend")]
struct Args {
    /// Timed repetitions per phase (after one warm-up); the median is printed.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    #[command(flatten)]
    shape: BatchShape,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Median forward and backward seconds of `f` over `runs`, summed over its calls: `f` gets the
/// block index and a fresh leaf input and returns the output to differentiate.
fn time_phase(
    runs: usize,
    blocks: usize,
    input: &Tensor<3>,
    f: impl Fn(usize, Tensor<3>) -> Tensor<3>,
) -> (f64, f64) {
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for run in 0..=runs {
        let (mut tf, mut tb) = (0.0, 0.0);
        for i in 0..blocks {
            let x = input.clone().detach().require_grad();
            let t0 = Instant::now();
            let y = f(i, x);
            let t1 = Instant::now();
            let grads = y.sum().backward();
            let t2 = Instant::now();
            drop(grads);
            tf += (t1 - t0).as_secs_f64();
            tb += (t2 - t1).as_secs_f64();
        }
        if run > 0 {
            fwd.push(tf);
            bwd.push(tb);
        }
    }
    (median(fwd), median(bwd))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    fourm_model::allocator::keep_freed_memory();
    let args = Args::parse();
    let config = FourMConfig::perf();
    let modalities = Modalities::perf();
    let device = Device::flex().autodiff();
    let model = config.init(&modalities, 0, &device)?;
    let (b, n, m, d) = (
        args.shape.batch,
        args.shape.inputs,
        args.shape.targets,
        config.dim,
    );
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<3>::random([b, n, d], normal, &device);
    let y = Tensor::<3>::random([b, m, d], normal, &device);
    let context = Tensor::<3>::random([b, n, d], normal, &device);
    // A decoder mask of the usual density: each query sees about half the targets.
    let self_bias = Tensor::<4>::random([b, 1, m, m], Distribution::Default, &device)
        .lower_elem(0.5)
        .float()
        .mul_scalar(MASKED);

    let enc: &[Block] = &model.encoder;
    let dec: &[DecoderBlock] = &model.decoder;
    let rows: Vec<(&str, (f64, f64))> = vec![
        (
            "encoder self-attention",
            time_phase(args.runs, enc.len(), &x, |i, x| {
                x.clone() + enc[i].attn.forward(enc[i].norm1.forward(x), None)
            }),
        ),
        (
            "encoder MLP",
            time_phase(args.runs, enc.len(), &x, |i, x| {
                x.clone() + enc[i].mlp.forward(enc[i].norm2.forward(x))
            }),
        ),
        (
            "decoder self-attention",
            time_phase(args.runs, dec.len(), &y, |i, y| {
                let bias = Some(self_bias.clone());
                y.clone() + dec[i].self_attn.forward(dec[i].norm1.forward(y), bias)
            }),
        ),
        (
            "decoder cross-attention",
            time_phase(args.runs, dec.len(), &y, |i, y| {
                let ctx = dec[i].context_norm.forward(context.clone());
                let q = dec[i].query_norm.forward(y.clone());
                y + dec[i].cross_attn.forward(q, ctx, None)
            }),
        ),
        (
            "decoder MLP",
            time_phase(args.runs, dec.len(), &y, |i, y| {
                y.clone() + dec[i].mlp.forward(dec[i].norm2.forward(y))
            }),
        ),
    ];

    let batch = random_batch(&modalities, b, n, m, 0);
    let options = StepOptions::new(n, m);
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for run in 0..=args.runs {
        let t0 = Instant::now();
        let out = model.forward(&batch, &options)?;
        let t1 = Instant::now();
        let grads = out.loss.backward();
        let t2 = Instant::now();
        drop(grads);
        if run > 0 {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
        }
    }
    let whole = (median(fwd), median(bwd));

    println!(
        "perf model: dim {d}, {} + {} blocks, {} heads; batch {b}, {n} input + {m} target tokens",
        config.encoder_depth, config.decoder_depth, config.num_heads
    );
    println!(
        "{:<34} {:>10} {:>10}",
        "phase (ms, median)", "forward", "backward"
    );
    let (mut sf, mut sb) = (0.0, 0.0);
    for (name, (f, bk)) in &rows {
        println!("{name:<34} {:>10.1} {:>10.1}", f * 1e3, bk * 1e3);
        sf += f;
        sb += bk;
    }
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "embeddings, selection, heads, loss",
        (whole.0 - sf) * 1e3,
        (whole.1 - sb) * 1e3
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "whole step (FourM::forward, backward)",
        whole.0 * 1e3,
        whole.1 * 1e3
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average {}", load.trim());
    Ok(())
}
