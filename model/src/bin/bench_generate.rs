//! Times generation on the CPU (Flex) backend, or a GPU with `--device cuda`: MaskGIT and ROAR
//! decoding of a 16×16 token image from two other token images, and autoregressive decoding of a
//! caption from a token image with and without the key/value cache, for the `debug` and `perf`
//! models (or 4M-B's size, `--model base`) with the benchmark modalities (three 16×16 grids of
//! 1024 codes, a 32-token caption of 1000 words; the caption length is a flag). Weights are
//! random; decoding is greedy and never stops early, so every run decodes the same number of
//! tokens. Prints the median time and tokens/s of each.

use std::time::Instant;

use clap::{Parser, ValueEnum};
use fourm_model::bench::{BenchDevice, median};
use fourm_model::generate::{
    EncodedContext, GenState, GenerationPlan, Generator, Method, NoHook, SpecialTokens, Stop,
    TargetPlan,
};
use fourm_model::{FourM, FourMConfig, Modalities, ModalitySpec, ModelError};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Model {
    Debug,
    Perf,
    /// debug and perf.
    Both,
    /// 4M-B's size (`fm_base_12e_12d_swiglu_nobias`) on the benchmark modalities.
    Base,
}

#[derive(Parser)]
#[command(about = "Benchmark fourm generation on the CPU (Flex) backend")]
struct Args {
    /// Which model preset(s).
    #[arg(long, value_enum, default_value_t = Model::Both)]
    model: Model,
    /// Samples generated together.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// MaskGIT / ROAR steps.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Timed runs per measurement (after one untimed warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Caption length (`max_tokens`; the benchmark set has 32).
    #[arg(long, default_value_t = 32)]
    caption_len: usize,
    /// Where generation runs.
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    device: BenchDevice,
    /// GPU index (with `--device cuda`).
    #[arg(long, default_value_t = 0)]
    device_index: usize,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Median seconds of `runs` generations (after a warm-up) and the final state of the last.
fn time(
    model: &FourM,
    state: &GenState,
    plan: &GenerationPlan,
    runs: usize,
) -> Result<(f64, GenState), ModelError> {
    let specials = SpecialTokens::ml4m_wordpiece();
    let generator = Generator::new(model, &specials);
    let mut out = generator.generate(state.clone(), plan, &mut NoHook)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        out = generator.generate(state.clone(), plan, &mut NoHook)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok((median(times), out))
}

fn tokens(batch: usize, grid: usize, vocab: i64, seed: i64) -> Vec<i64> {
    (0..(batch * grid) as i64)
        .map(|i| (i * 37 + seed * 11) % vocab)
        .collect()
}

/// The benchmark modalities with a caption of `len` tokens.
fn modalities(len: usize) -> Result<Modalities, ModelError> {
    let specs = Modalities::perf()
        .iter()
        .map(|s| match s.name.as_str() {
            "caption" => ModalitySpec::sequence("caption", s.vocab_size, len),
            _ => s.clone(),
        })
        .collect();
    Modalities::new(specs)
}

fn bench(name: &str, config: FourMConfig, args: &Args) -> Result<(), ModelError> {
    let modalities = modalities(args.caption_len)?;
    let model = config.init(&modalities, 0, &args.device.device(args.device_index)?)?;
    let b = args.batch;
    let grid = 256;
    println!(
        "model {name}: dim {} enc {} dec {} heads {}, batch {b}",
        config.dim, config.encoder_depth, config.decoder_depth, config.num_heads
    );

    let image = GenState::new(&modalities, b)?
        .with_tokens("tok_depth", tokens(b, grid, 1024, 1))?
        .with_tokens("tok_normal", tokens(b, grid, 1024, 2))?;
    for (label, target) in [
        (
            format!("maskgit {} steps", args.steps),
            TargetPlan::maskgit("tok_rgb", args.steps),
        ),
        (
            format!("roar {} steps", args.steps),
            TargetPlan::roar("tok_rgb", args.steps),
        ),
    ] {
        let (t, _) = time(
            &model,
            &image,
            &GenerationPlan::new(vec![target]),
            args.runs,
        )?;
        println!(
            "  {label:<24} {:9.1} ms  {:9.0} tokens/s  ({} tokens)",
            t * 1e3,
            (b * grid) as f64 / t,
            b * grid
        );
    }

    let caption_state =
        GenState::new(&modalities, b)?.with_tokens("tok_rgb", tokens(b, grid, 1024, 3))?;
    let mut caption = TargetPlan::autoregressive("caption");
    caption.method = Method::Autoregressive { stop: Stop::Never };
    let decoded = modalities.get("caption").map_or(0, |s| s.max_tokens - 1);
    let encoder = {
        let mut times = Vec::with_capacity(args.runs);
        for _ in 0..=args.runs {
            let t0 = Instant::now();
            let context = EncodedContext::encode(&model, &caption_state)?;
            if let Some(c) = context.context {
                let _ = c.sum().into_scalar::<f32>();
            }
            times.push(t0.elapsed().as_secs_f64());
        }
        median(times)
    };
    println!(
        "  (encoder pass alone {:.1} ms, included in each caption below)",
        encoder * 1e3
    );
    let mut results = Vec::new();
    for kv_cache in [true, false] {
        let plan = GenerationPlan {
            kv_cache,
            ..GenerationPlan::new(vec![caption.clone()])
        };
        let (t, out) = time(&model, &caption_state, &plan, args.runs)?;
        let label = if kv_cache {
            "autoregressive, kv cache"
        } else {
            "autoregressive, no cache"
        };
        println!(
            "  {label:<24} {:9.1} ms  {:9.0} tokens/s  ({} tokens; {:.0} tokens/s without the encoder pass)",
            t * 1e3,
            (b * decoded) as f64 / t,
            b * decoded,
            (b * decoded) as f64 / (t - encoder).max(1e-9)
        );
        results.push((t, out.sequences("caption")));
    }
    println!(
        "  kv cache speed-up        {:9.2}x  (same greedy captions: {})",
        results[1].0 / results[0].0,
        results[0].1 == results[1].1
    );
    Ok(())
}

fn main() -> Result<(), ModelError> {
    fourm_model::allocator::keep_freed_memory();
    let args = Args::parse();
    if matches!(args.model, Model::Debug | Model::Both) {
        bench("debug", FourMConfig::debug(), &args)?;
    }
    if matches!(args.model, Model::Perf | Model::Both) {
        bench("perf", FourMConfig::perf(), &args)?;
    }
    if args.model == Model::Base {
        let base = FourMConfig::from_ml4m_name("fm_base_12e_12d_swiglu_nobias")?;
        bench("base", base, &args)?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "threads {}  load average {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load.trim()
    );
    Ok(())
}
