//! `fourm data …`: dataset tools. Each subcommand is a variant with its own args struct and a
//! `run_*` function returning the exit code; add new ones (synth, train-tokenizer, render) the
//! same way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use fourm_data::{
    DatasetStore, InspectReport, ModalityStats, ScanOptions, StoreConfig, inspect, scan_dataset,
    write_index,
};
use fourm_masking::{TextTokenizer, TextTokenizerOptions};
use fourm_synth::{SynthConfig, preview_sample, write_synthetic};

/// Dataset subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Scan `<url>/<modality>/shard-NNNNN.tar`, validate every shard and write `<url>/index.json`.
    Index(IndexArgs),
    /// Show a dataset's modalities, counts and token histograms, and every validation error
    /// (exit code 1 if there is any).
    Inspect(InspectArgs),
    /// Write a synthetic aligned dataset: ray-cast scenes as RGB, depth, normal and segmentation
    /// tokens (patch-VQ codebooks fit on the data), captions and boxes, raw PNGs under raw/.
    Synth(SynthArgs),
    /// Train a WordPiece text tokenizer with ml-4m's special tokens on text files (one text per
    /// line).
    TrainTokenizer(TrainTokenizerArgs),
    /// Draw all modalities of a synthetic-dataset sample side by side, raw and decoded from its
    /// tokens, as a PNG.
    Render(RenderArgs),
}

/// `fourm data synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Where to write the dataset (directory, file://, s3://, gs://, az://).
    #[arg(long)]
    pub out: String,
    /// Samples.
    #[arg(long, default_value_t = 2000)]
    pub samples: u64,
    /// Samples per shard.
    #[arg(long, default_value_t = 500)]
    pub shard_samples: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub resolution: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Patch side of the image tokenizers (token grid = resolution / patch).
    #[arg(long, default_value_t = 8)]
    pub patch: usize,
    /// Codebook size (vocabulary) of each image tokenizer.
    #[arg(long, default_value_t = 256)]
    pub codebook_size: usize,
    /// The first samples whose patches fit the codebooks.
    #[arg(long, default_value_t = 256)]
    pub fit_samples: u64,
    /// Fewest objects per scene (at most `--max-objects`).
    #[arg(long, default_value_t = 2)]
    pub min_objects: usize,
    /// Most objects per scene.
    #[arg(long, default_value_t = 4)]
    pub max_objects: usize,
    /// Camera zoom, 0.5 to 4 (2: objects twice as large in the picture).
    #[arg(long, default_value_t = 1.0)]
    pub zoom: f64,
    /// Held-out samples, written to `<out>/val/` (for `fourm eval` and validation).
    #[arg(long, default_value_t = 0)]
    pub val_samples: u64,
}

impl SynthArgs {
    /// The command's defaults, writing to `out`.
    pub fn defaults(out: String) -> Self {
        let command = <Self as clap::Args>::augment_args(clap::Command::new("synth"));
        let matches = command.get_matches_from(["synth", "--out", out.as_str()]);
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).expect("the defaults parse")
    }
}

/// `fourm data train-tokenizer`.
#[derive(Debug, Args)]
pub struct TrainTokenizerArgs {
    /// Text files, one text per line.
    #[arg(long, required = true, num_args = 1..)]
    pub corpus: Vec<std::path::PathBuf>,
    /// Where to write the tokenizer JSON.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 30_000)]
    pub vocab_size: usize,
    /// Sentinels [S_0]….
    #[arg(long, default_value_t = 200)]
    pub sentinels: usize,
    /// Coordinate bins (tokens v0=0 … v3=<bins-1>).
    #[arg(long, default_value_t = 1000)]
    pub coord_bins: usize,
    /// A class name to add as a whole token (repeatable).
    #[arg(long = "class")]
    pub classes: Vec<String>,
}

/// `fourm data render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Dataset root written by `fourm data synth`.
    pub url: String,
    /// Key of the sample (e.g. 00000042).
    #[arg(long)]
    pub sample: String,
    /// Where to write the PNG.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// Where the dataset is and how to read it.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Dataset root: a directory, file://, s3://, gs://, az:// (cloud credentials and endpoints
    /// from the usual environment variables, e.g. AWS_ENDPOINT_URL).
    pub url: String,
    /// Vocabulary size of a token modality, `NAME=SIZE` (repeatable); ml-4m's `tok_*` modalities
    /// are known.
    #[arg(long = "vocab", value_name = "NAME=SIZE", value_parser = parse_vocab)]
    pub vocab: Vec<(String, u32)>,
}

/// `fourm data index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Record SHA-256 checksums of every tar (verified on every read).
    #[arg(long)]
    pub checksums: bool,
    /// Write the index of the good shards even if some are bad (they are still reported).
    #[arg(long)]
    pub skip_bad: bool,
}

/// `fourm data inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Inspect only this shard.
    #[arg(long)]
    pub shard: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `data` subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    let runtime = crate::runtime()?;
    match cmd {
        DataCommand::Index(args) => runtime.block_on(run_index(args)),
        DataCommand::Inspect(args) => runtime.block_on(run_inspect(args)),
        DataCommand::Synth(args) => runtime.block_on(run_synth(args)),
        DataCommand::TrainTokenizer(args) => run_train_tokenizer(args),
        DataCommand::Render(args) => runtime.block_on(run_render(args)),
    }
}

fn parse_vocab(s: &str) -> Result<(String, u32), String> {
    let (name, size) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=SIZE, got {s:?}"))?;
    let size: u32 = size
        .parse()
        .map_err(|e| format!("bad vocabulary size {size:?}: {e}"))?;
    if name.is_empty() || size == 0 {
        return Err(format!("expected NAME=SIZE with SIZE > 0, got {s:?}"));
    }
    Ok((name.to_string(), size))
}

impl DatasetArgs {
    fn open(&self) -> anyhow::Result<(DatasetStore, ScanOptions)> {
        let store = DatasetStore::open(&self.url, StoreConfig::default())
            .with_context(|| format!("opening {}", self.url))?;
        let options = ScanOptions {
            vocab_sizes: self.vocab.iter().cloned().collect::<BTreeMap<_, _>>(),
            checksums: false,
        };
        Ok((store, options))
    }
}

async fn run_index(args: IndexArgs) -> anyhow::Result<ExitCode> {
    let (store, mut options) = args.dataset.open()?;
    options.checksums = args.checksums;
    let outcome = scan_dataset(&store, &options)
        .await
        .with_context(|| format!("scanning {}", store.url()))?;
    let index = &outcome.index;
    println!(
        "{}: {} modalities, {} shards, {} samples, {} bytes",
        store.url(),
        index.modalities.len(),
        index.shards.len(),
        index.samples(),
        index.bytes()
    );
    for (shard, e) in &outcome.bad {
        eprintln!("bad shard {shard}: {}", chain(e));
    }
    if !outcome.bad.is_empty() && !args.skip_bad {
        eprintln!(
            "error: {} bad shard(s); index.json not written (--skip-bad writes it without them)",
            outcome.bad.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    if index.shards.is_empty() {
        anyhow::bail!("no good shard in {}", store.url());
    }
    write_index(&store, index)
        .await
        .context("writing index.json")?;
    println!("wrote {}/index.json", store.url());
    Ok(ExitCode::SUCCESS)
}

async fn run_inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let (store, options) = args.dataset.open()?;
    let report = inspect(&store, args.shard, &options)
        .await
        .with_context(|| format!("inspecting {}", store.url()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} problem(s) in {}",
            report.errors.len(),
            report.url
        );
        Ok(ExitCode::FAILURE)
    }
}

impl SynthArgs {
    /// The generator's configuration these arguments ask for (not yet validated).
    pub fn config(&self) -> SynthConfig {
        let mut config = SynthConfig {
            samples: self.samples,
            shard_samples: self.shard_samples,
            resolution: self.resolution,
            seed: self.seed,
            patch: self.patch,
            codebook_size: self.codebook_size,
            fit_samples: self.fit_samples,
            val_samples: self.val_samples,
            ..SynthConfig::default()
        };
        config.scene.max_objects = self.max_objects;
        config.scene.min_objects = self.min_objects.min(self.max_objects);
        config.scene.zoom = self.zoom;
        config
    }
}

pub(crate) async fn run_synth(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let config = args.config();
    config.validate()?;
    if let Some(dir) = local_dir(&args.out) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    }
    let store = DatasetStore::open(&args.out, StoreConfig::default())
        .with_context(|| format!("opening {}", args.out))?;
    let started = std::time::Instant::now();
    let report = write_synthetic(&store, &config)
        .await
        .with_context(|| format!("writing the synthetic dataset to {}", args.out))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {} samples in {} shards (+ {} held out in val/), {} bytes, {seconds:.1} s ({:.0} \
         samples/s; fit {:.1} s, render+tokenize+write {:.1} s)",
        store.url(),
        report.samples,
        report.shards,
        report.val_samples,
        report.bytes,
        (report.samples + report.val_samples) as f64 / seconds,
        report.fit_seconds,
        report.write_seconds,
    );
    for (modality, vocab) in &report.vocab_sizes {
        println!("  {modality:<16} vocab {vocab}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory of a local dataset URL (plain path or file://), to create before writing.
fn local_dir(url: &str) -> Option<&str> {
    match url.split_once("://") {
        None => Some(url),
        Some(("file", path)) => Some(path),
        Some(_) => None,
    }
}

fn run_train_tokenizer(args: TrainTokenizerArgs) -> anyhow::Result<ExitCode> {
    let mut lines = Vec::new();
    for path in &args.corpus {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    let options = TextTokenizerOptions {
        vocab_size: args.vocab_size,
        sentinels: args.sentinels,
        coord_bins: args.coord_bins,
        class_names: args.classes,
        min_frequency: 0,
    };
    let tokenizer = TextTokenizer::train(lines.iter(), &options).context("training")?;
    tokenizer.save(&args.out)?;
    println!(
        "{}: vocabulary {} ({} special tokens), trained on {} texts",
        args.out.display(),
        tokenizer.vocab_size(),
        options.special_count(),
        lines.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_render(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let store = DatasetStore::open(&args.url, StoreConfig::default())
        .with_context(|| format!("opening {}", args.url))?;
    let preview = preview_sample(&store, &args.sample)
        .await
        .with_context(|| format!("drawing sample {} of {}", args.sample, args.url))?;
    std::fs::write(&args.out, &preview.png)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{} (shard {})", args.out.display(), preview.shard);
    println!("  rows: raw, decoded from tokens; columns: rgb, depth, normal, semseg, rgb + boxes");
    println!("  caption: {}", preview.caption);
    println!("  det:     {}", preview.det_text);
    println!("  det via text tokens: {}", preview.det_decoded);
    Ok(ExitCode::SUCCESS)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(line, ": {s}");
        source = s.source();
    }
    line
}

/// The human-readable report.
fn render(r: &InspectReport) -> String {
    let mut out = String::new();
    let source = if r.indexed {
        "index.json"
    } else {
        "scanned, no index.json"
    };
    let _ = writeln!(out, "dataset {} ({source})", r.url);
    let _ = writeln!(
        out,
        "{} shards, {} samples, {} bytes; inspected {} shard(s), {} good sample(s)",
        r.index.shards.len(),
        r.index.samples(),
        r.index.bytes(),
        r.shards_read.len(),
        r.samples_read
    );
    for (name, m) in &r.index.modalities {
        let vocab = m.vocab_size.map_or("-".into(), |v| v.to_string());
        let grid = m
            .token_shape
            .map_or("-".into(), |[h, w]| format!("{h}x{w}"));
        let _ = writeln!(
            out,
            "  {name:<24} {:<14} .{:<5} vocab {vocab:<6} grid {grid}",
            format!("{:?}", m.kind).to_lowercase(),
            m.extension
        );
    }
    for (name, s) in &r.stats {
        match s {
            ModalityStats::Tokens {
                count,
                min,
                max,
                distinct,
                histogram,
            } => {
                let show = |v: &Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
                let _ = writeln!(
                    out,
                    "{name}: {count} ids, min {}, max {}, {distinct} distinct",
                    show(min),
                    show(max)
                );
                let bins: Vec<String> = histogram.iter().map(u64::to_string).collect();
                let _ = writeln!(out, "  histogram ({} bins): {}", bins.len(), bins.join(" "));
            }
            ModalityStats::Text {
                entries,
                mean_chars,
                max_chars,
            } => {
                let _ = writeln!(
                    out,
                    "{name}: {entries} entries, {mean_chars:.1} chars on average, {max_chars} max"
                );
            }
            ModalityStats::CropSettings { crops } => {
                let _ = writeln!(out, "{name}: {crops} crops");
            }
        }
    }
    out
}
