//! `fourm plan-memory`: the memory one rank needs to train a preset, by kind (parameters,
//! gradients, optimizer state, activations), computed from the sizes so that a configuration can
//! be chosen before renting GPUs. `bench-memory` measures the same figures for the small presets.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use fourm_model::memory::{MemoryPlan, PlanInput, Precision, plan_memory};
use fourm_model::{ArchVariant, FourMConfig, Modalities};

/// Model sizes of ml-4m's registry (SwiGLU, no biases) and the two small test models.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Preset {
    /// 64 wide, 2 + 2 blocks (tests).
    Debug,
    /// 256 wide, 6 + 6 blocks (the CPU benchmark model).
    Perf,
    /// `fm_tiny_6e_6d`: 384 wide, 6 + 6 blocks.
    Tiny,
    /// `fm_small_8e_8d`: 512 wide, 8 + 8 blocks.
    Small,
    /// `fm_base_12e_12d` (4M-B): 768 wide, 12 + 12 blocks.
    Base,
    /// `fm_large_24e_24d` (4M-L): 1024 wide, 24 + 24 blocks.
    Large,
    /// `fm_xlarge_24e_24d` (4M-XL): 2048 wide, 24 + 24 blocks.
    Xlarge,
}

impl Preset {
    fn config(self) -> FourMConfig {
        let v = ArchVariant::SwigluNobias;
        match self {
            Preset::Debug => FourMConfig::debug(),
            Preset::Perf => FourMConfig::perf(),
            Preset::Tiny => FourMConfig::tiny(v),
            Preset::Small => FourMConfig::small(v),
            Preset::Base => FourMConfig::base(v),
            Preset::Large => FourMConfig::large(v),
            Preset::Xlarge => FourMConfig::xlarge(v),
        }
    }
}

/// The modality set the embeddings are sized for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModalitySet {
    /// ml-4m's 4M-7 at 224 px (RGB pixels, five tokenized image modalities, caption, det).
    Mod7,
    /// The benchmark set: three 16×16 token modalities with 1024 codes and a caption.
    Perf,
}

/// Number format of the forward and backward pass.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    /// fp32 everywhere.
    F32,
    /// bf16 autocast (fp32 master weights and moments).
    Bf16,
}

/// `fourm plan-memory`.
#[derive(Debug, Args)]
pub struct PlanMemoryArgs {
    /// Model size.
    #[arg(long, value_enum, default_value = "base")]
    pub preset: Preset,
    /// Modalities the embeddings are sized for.
    #[arg(long, value_enum, default_value = "mod7")]
    pub modalities: ModalitySet,
    /// Data-parallel ranks (one per GPU).
    #[arg(long, default_value_t = 1)]
    pub world: usize,
    /// Samples of one micro-batch on one rank.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Encoder (input) tokens per sample.
    #[arg(long, default_value_t = 128)]
    pub inputs: usize,
    /// Decoder (target) tokens per sample.
    #[arg(long, default_value_t = 128)]
    pub targets: usize,
    /// Shard the optimizer state over the ranks (`train.shard_optimizer`).
    #[arg(long)]
    pub shard_optimizer: bool,
    /// Forward/backward number format.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
}

/// Prints the plan.
pub fn run(args: PlanMemoryArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.world >= 1, "--world must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(
        args.inputs >= 1 && args.targets >= 1,
        "--inputs and --targets must be at least 1"
    );
    let config = args.preset.config();
    let modalities = match args.modalities {
        ModalitySet::Mod7 => Modalities::mod7_224(),
        ModalitySet::Perf => Modalities::perf(),
    };
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::Bf16 => Precision::Bf16,
    };
    let plan = plan_memory(
        &config,
        &modalities,
        PlanInput {
            world: args.world,
            micro_batch: args.batch,
            encoder_tokens: args.inputs,
            decoder_tokens: args.targets,
            shard_optimizer: args.shard_optimizer,
            precision,
        },
    );
    print!("{}", render(&args, &config, &plan));
    Ok(ExitCode::SUCCESS)
}

/// The name a value has on the command line.
fn name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn render(args: &PlanMemoryArgs, config: &FourMConfig, plan: &MemoryPlan) -> String {
    let c = plan.count;
    let shard = if args.shard_optimizer && args.world > 1 {
        format!("optimizer sharded 1/{}", args.world)
    } else {
        "optimizer state whole on every rank".to_string()
    };
    let mut out = format!(
        "{} (dim {}, {} + {} blocks) on {}: {:.3} B trainable scalars ({:.3} B without \
         the embeddings), {:.1} M buffer scalars\n",
        name(&args.preset),
        config.dim,
        config.encoder_depth,
        config.decoder_depth,
        name(&args.modalities),
        c.trainable as f64 / 1e9,
        (c.trainable - c.embeddings) as f64 / 1e9,
        c.buffers as f64 / 1e6,
    );
    out += &format!(
        "per rank, world {}, micro-batch {} × ({} + {}) tokens, {}, {shard}:\n",
        args.world,
        args.batch,
        args.inputs,
        args.targets,
        name(&args.precision)
    );
    for (what, bytes) in [
        ("parameters", plan.parameters),
        ("gradients", plan.gradients),
        ("optimizer", plan.optimizer),
        ("activations (estimate)", plan.activations),
        ("total", plan.total()),
    ] {
        out += &format!("  {what:<24} {:>9.2} GiB\n", gib(bytes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_kind_and_the_shard() {
        let args = PlanMemoryArgs {
            preset: Preset::Xlarge,
            modalities: ModalitySet::Mod7,
            world: 8,
            batch: 16,
            inputs: 256,
            targets: 256,
            shard_optimizer: true,
            precision: PrecisionArg::Bf16,
        };
        let config = args.preset.config();
        let plan = plan_memory(
            &config,
            &Modalities::mod7_224(),
            PlanInput {
                world: 8,
                micro_batch: 16,
                encoder_tokens: 256,
                decoder_tokens: 256,
                shard_optimizer: true,
                precision: Precision::Bf16,
            },
        );
        let text = render(&args, &config, &plan);
        for word in [
            "parameters",
            "gradients",
            "optimizer",
            "activations",
            "total",
            "sharded 1/8",
        ] {
            assert!(text.contains(word), "{word} missing:\n{text}");
        }
        // 4M-XL's moments alone are ~23 GB whole; sharded over 8 they are an eighth.
        assert!(gib(plan.optimizer) < 4.0, "{text}");
    }
}
