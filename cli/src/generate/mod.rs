//! `fourm generate`: any-to-any generation from a checkpoint. Conditions come from files, targets
//! are generated in the order given (each one conditions the next), and every target is written
//! as tokens and, where the dataset's tokenizers can decode it, as a picture or text.

mod files;
pub mod load;
mod preview;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use fourm_model::ModalityKind;
use fourm_model::generate::{
    GenState, GenerationPlan, Generator, Guidance, NoHook, Sampling, TargetPlan, TopK,
};

use fourm_synth::{ImagePlane, RawFormat};

use self::files::{Condition, condition_plane, read_condition, write_output};

/// `fourm generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Checkpoint: a committed step folder (`<root>/step-000000300`) or a checkpoint root (its
    /// latest committed step); a path or an object-store URL.
    #[arg(long)]
    pub checkpoint: String,
    /// Dataset holding the tokenizers (default: the one the checkpoint was trained on).
    #[arg(long)]
    pub dataset: Option<String>,
    /// A condition, MODALITY=FILE: a PNG image (tokenized with the dataset's tokenizer of that
    /// modality), a token array (.npy), or a text file (caption, det). Repeatable.
    #[arg(long = "condition", value_parser = parse_condition)]
    pub conditions: Vec<(String, PathBuf)>,
    /// A modality to generate. Repeat for a chain: each generated modality conditions the next.
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Decoding method (default: maskgit for image modalities, ar for sequences).
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Decoding steps of maskgit and roar.
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub top_p: f64,
    /// Classifier-free guidance scale (1: none).
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f64,
    /// Seed: the same seed gives the same outputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// MaskGIT with a cosine schedule (image modalities).
    Maskgit,
    /// Random-order autoregression (image modalities).
    Roar,
    /// Left-to-right autoregression (sequences).
    Ar,
}

fn parse_condition(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((m, f)) if !m.is_empty() && !f.is_empty() => Ok((m.to_string(), PathBuf::from(f))),
        _ => Err(format!("expected MODALITY=FILE, got {s:?}")),
    }
}

/// Runs `fourm generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(generate(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let device = Device::flex();
    let loaded = load::load(&args.checkpoint, args.dataset.as_deref(), &device).await?;
    eprintln!(
        "checkpoint {} (step {}), model `{}`, dataset {}",
        loaded.folder, loaded.step, loaded.config.model.preset, loaded.config.data.dataset
    );
    let modalities = loaded.model.modalities().clone();
    let mut state = GenState::new(&modalities, 1)?;
    // The RGB image of the run (a condition or a generated output), under box previews.
    let mut rgb: Option<ImagePlane> = None;
    for (modality, file) in &args.conditions {
        if args.targets.contains(modality) {
            bail!("`{modality}` is both a condition and a target");
        }
        let condition = read_condition(&loaded, modality, file).await?;
        if is_rgb(modality) {
            rgb = condition_plane(&loaded, modality, &condition).await?;
        }
        state = match condition {
            Condition::Grid(ids) => state.with_tokens(modality, ids)?,
            Condition::Sequence(ids) => state.with_sequence(modality, &[ids], &loaded.specials)?,
        };
    }
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: if args.top_k == 0 {
            TopK::Off
        } else {
            TopK::Count(args.top_k)
        },
        top_p: args.top_p,
    };
    let mut targets = Vec::new();
    for name in &args.targets {
        let spec = modalities
            .get(name)
            .with_context(|| format!("the model has no modality `{name}`"))?;
        let image = matches!(spec.kind, ModalityKind::ImageTokens { .. });
        let plan = match (args.method, image) {
            (None | Some(MethodArg::Maskgit), true) => TargetPlan::maskgit(name, args.steps),
            (Some(MethodArg::Roar), true) => TargetPlan::roar(name, args.steps),
            (None | Some(MethodArg::Ar), false) => TargetPlan::autoregressive(name),
            (Some(m), _) => bail!("--method {m:?} cannot generate `{name}`"),
        };
        targets.push(
            plan.with_sampling(sampling)
                .with_guidance(Guidance::constant(args.cfg)),
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let generator = Generator::new(&loaded.model, &loaded.specials);
    // One target at a time, so that each is reported (and written) as soon as it is done; the
    // state carries every finished target into the next as a condition.
    for (k, target) in targets.into_iter().enumerate() {
        let name = target.modality.clone();
        let started = Instant::now();
        eprintln!("[{}/{}] generating {name}", k + 1, args.targets.len());
        let plan = GenerationPlan::new(vec![target]).with_seed(args.seed.wrapping_add(k as u64));
        state = generator.generate(state, &plan, &mut NoHook)?;
        let ids = state
            .get(&name)
            .with_context(|| format!("`{name}` was not generated"))?
            .ids()
            .to_vec();
        let mut written = write_output(&loaded, &name, &ids, &args.out).await?;
        if is_rgb(&name) {
            rgb = written.plane.clone();
        }
        if let (true, Some(text)) = (name.starts_with("det"), &written.text) {
            let path = args.out.join(format!("{name}.preview.png"));
            std::fs::write(&path, preview::boxes(text, rgb.as_ref())?)
                .with_context(|| format!("writing {}", path.display()))?;
            written.files.push(path);
        }
        eprintln!(
            "[{}/{}] {name} done in {:.2} s",
            k + 1,
            args.targets.len(),
            started.elapsed().as_secs_f64()
        );
        for path in written.files {
            println!("{}", path.display());
        }
    }
    Ok(())
}

/// Whether `modality` holds RGB images (`tok_rgb@…`).
fn is_rgb(modality: &str) -> bool {
    RawFormat::of_modality(modality) == Some(RawFormat::Rgb)
}
