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

/// Dataset subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Scan `<url>/<modality>/shard-NNNNN.tar`, validate every shard and write `<url>/index.json`.
    Index(IndexArgs),
    /// Show a dataset's modalities, counts and token histograms, and every validation error
    /// (exit code 1 if there is any).
    Inspect(InspectArgs),
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cmd {
        DataCommand::Index(args) => runtime.block_on(run_index(args)),
        DataCommand::Inspect(args) => runtime.block_on(run_inspect(args)),
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
                let _ = writeln!(
                    out,
                    "{name}: {count} ids, min {min:?}, max {max:?}, {distinct} distinct"
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
