//! Writing a synthetic aligned dataset in ml-4m's layout.
//!
//! ```text
//! <root>/tok_rgb@R/shard-NNNNN.tar      <key>.npy  int16 (1, H·W) patch-VQ tokens   } read by
//! <root>/tok_depth@R/…, tok_normal@R/…, tok_semseg@R/…                             } training,
//! <root>/caption/shard-NNNNN.tar        <key>.txt                                   } indexed in
//! <root>/det/shard-NNNNN.tar            <key>.json ml-4m boxes                      } index.json
//! <root>/raw/{rgb,depth,normal,semseg}/shard-NNNNN.tar   <key>.png  raw pictures (see raster)
//! <root>/tokenizers/tok_*@R.safetensors                  patch-VQ codebooks
//! <root>/text_tokenizer.json                              WordPiece of the caption vocabulary
//! <root>/synth.json                                       what was generated, and how
//! <root>/index.json                                       the dataset index (scanned, validated)
//! <root>/val/…                                            the held-out split, laid out the same
//! ```
//!
//! Sample `i` is key `format!("{i:08}")` in shard `i / shard_samples`; everything about it is a
//! function of `(seed, i)`, and the codebooks of `(seed, fit_samples)`, so a dataset is the same
//! for a seed whatever machine, thread count or sample count (beyond the fit set) produced it.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::caption::{caption, detections, visible_objects};
use crate::error::SynthError;
use crate::image_tokenizer::{FitOptions, ImagePlane, PatchTokenizer, PixelCodec};
use crate::raster::{RawFormat, to_png};
use crate::render::{DEPTH_FAR, Frame, render};
use crate::scene::{CLASS_NAMES, COLORS, SHAPES, SIZES, Scene, SceneConfig};
use fourm_data::DataError;
use fourm_data::DatasetStore;
use fourm_data::npy;
use fourm_data::shard_path;
use fourm_data::write_index;
use fourm_data::write_tar;
use fourm_data::{ScanOptions, scan_dataset};
use fourm_masking::{TextTokenizer, TextTokenizerOptions};

/// Folder of the held-out split under the root.
pub const VAL_DIR: &str = "val";
/// Folder of the raw pictures under the root.
pub const RAW_DIR: &str = "raw";
/// Folder of the image tokenizers' codebooks under the root.
pub const TOKENIZERS_DIR: &str = "tokenizers";
/// The text tokenizer under the root.
pub const TEXT_TOKENIZER_FILE: &str = "text_tokenizer.json";
/// The generation record under the root.
pub const MANIFEST_FILE: &str = "synth.json";

/// The image-like modalities: raw folder name, PNG format and token codec.
pub const IMAGE_MODALITIES: [(&str, RawFormat); 4] = [
    ("rgb", RawFormat::Rgb),
    ("depth", RawFormat::Depth),
    ("normal", RawFormat::Normal),
    ("semseg", RawFormat::Classes),
];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Samples.
    pub samples: u64,
    /// Samples per shard.
    pub shard_samples: u64,
    /// Image side in pixels.
    pub resolution: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Patch side of the image tokenizers (token grid = resolution / patch).
    pub patch: usize,
    /// Codebook size of every image tokenizer (≤ 32767: tokens are int16, as in ml-4m).
    pub codebook_size: usize,
    /// The first samples whose patches fit the codebooks.
    pub fit_samples: u64,
    /// Held-out samples written to `<root>/val/` (a dataset of its own, never leased for
    /// training): indices `samples..samples + val_samples`.
    #[serde(default)]
    pub val_samples: u64,
    /// Lloyd iterations of the codebook fit.
    pub kmeans_iterations: usize,
    /// Objects per scene.
    pub scene: SceneConfig,
    /// The text tokenizer's special tokens (its words are the captions' closed vocabulary).
    pub text: TextTokenizerOptions,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            samples: 2000,
            shard_samples: 500,
            resolution: 64,
            seed: 0,
            patch: 8,
            codebook_size: 256,
            fit_samples: 256,
            val_samples: 0,
            kmeans_iterations: 10,
            scene: SceneConfig::default(),
            text: TextTokenizerOptions {
                vocab_size: 5000,
                class_names: SHAPES.iter().map(|s| s.name().to_string()).collect(),
                ..TextTokenizerOptions::default()
            },
        }
    }
}

impl SynthConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Options(m));
        if self.samples == 0 || self.shard_samples == 0 {
            return bad("samples and shard_samples must be positive".into());
        }
        if self.resolution < 8 || self.resolution > 1024 {
            return bad(format!("resolution {} not in 8..=1024", self.resolution));
        }
        if self.patch == 0 || !self.resolution.is_multiple_of(self.patch) {
            return bad(format!(
                "patch {} does not divide resolution {}",
                self.patch, self.resolution
            ));
        }
        if !(1..=32767).contains(&self.codebook_size) {
            return bad(format!(
                "codebook_size {} not in 1..=32767",
                self.codebook_size
            ));
        }
        let patches =
            self.fit_samples.min(self.samples) as usize * (self.resolution / self.patch).pow(2);
        if patches < self.codebook_size {
            return bad(format!(
                "{patches} patches in the fit samples cannot fit {} codes: raise fit_samples",
                self.codebook_size
            ));
        }
        if self.scene.min_objects > self.scene.max_objects || self.scene.max_objects > 8 {
            return bad("objects per scene: need min ≤ max ≤ 8".into());
        }
        if !(self.scene.zoom.is_finite() && (0.5..=4.0).contains(&self.scene.zoom)) {
            return bad(format!("zoom {} not in 0.5..=4", self.scene.zoom));
        }
        self.text.validate()?;
        Ok(())
    }

    /// Name of the token modality of a raw one (`tok_rgb@64`).
    pub fn token_modality(&self, raw: &str) -> String {
        format!("tok_{raw}@{}", self.resolution)
    }

    /// The pixel codec of a raw modality.
    pub fn codec(&self, format: RawFormat) -> PixelCodec {
        match format {
            RawFormat::Rgb => PixelCodec::Rgb,
            RawFormat::Depth => PixelCodec::Depth { far: DEPTH_FAR },
            RawFormat::Normal => PixelCodec::Normal,
            RawFormat::Classes => PixelCodec::Classes {
                classes: CLASS_NAMES.len() as u8,
            },
        }
    }
}

/// One generated sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSample {
    /// WebDataset key.
    pub key: String,
    /// The scene.
    pub scene: Scene,
    /// Its rendering.
    pub frame: Frame,
    /// Caption.
    pub caption: String,
    /// ml-4m det boxes.
    pub det: fourm_masking::Detections,
}

/// Generates sample `index`.
pub fn generate_sample(config: &SynthConfig, index: u64) -> SynthSample {
    let scene = Scene::generate(&config.scene, config.seed, index);
    let frame = render(&scene, config.resolution, config.resolution);
    let visible = visible_objects(&frame, scene.objects.len());
    SynthSample {
        key: format!("{index:08}"),
        caption: caption(&scene, &visible),
        det: detections(&scene, &frame, &visible),
        scene,
        frame,
    }
}

/// A raw modality of a frame as a plane.
pub fn plane(frame: &Frame, format: RawFormat) -> ImagePlane {
    let data = match format {
        RawFormat::Rgb => frame.rgb.clone(),
        RawFormat::Depth => frame.depth.clone(),
        RawFormat::Normal => frame.normal.clone(),
        RawFormat::Classes => frame.semseg.iter().map(|&c| f32::from(c)).collect(),
    };
    ImagePlane {
        width: frame.width,
        height: frame.height,
        channels: format.channels(),
        data,
    }
}

/// What was written, and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthReport {
    /// Samples written (training split).
    pub samples: u64,
    /// Held-out samples written under `val/`.
    pub val_samples: u64,
    /// Shards written.
    pub shards: u64,
    /// Vocabulary of each tokenized modality.
    pub vocab_sizes: BTreeMap<String, u32>,
    /// Seconds fitting the codebooks.
    pub fit_seconds: f64,
    /// Seconds rendering, tokenizing, encoding and writing the shards, tokenizers and index.
    pub write_seconds: f64,
    /// Bytes of the shards.
    pub bytes: u64,
}

/// The image tokenizers of a config, fit on its first `fit_samples` samples.
pub fn fit_tokenizers(config: &SynthConfig) -> Result<Vec<PatchTokenizer>, SynthError> {
    config.validate()?;
    let n = config.fit_samples.min(config.samples);
    let frames: Vec<Frame> = (0..n)
        .into_par_iter()
        .map(|i| generate_sample(config, i).frame)
        .collect();
    IMAGE_MODALITIES
        .iter()
        .enumerate()
        .map(|(m, (raw, format))| {
            let planes: Vec<ImagePlane> = frames.iter().map(|f| plane(f, *format)).collect();
            let options = FitOptions {
                codebook_size: config.codebook_size,
                iterations: config.kmeans_iterations,
                seed: fourm_plan::derive_seed(&[config.seed, m as u64]),
            };
            let name = config.token_modality(raw);
            PatchTokenizer::fit(&name, config.codec(*format), config.patch, &planes, options)
        })
        .collect()
}

/// Writes the dataset of `config` under `store`'s root.
pub async fn write_synthetic(
    store: &DatasetStore,
    config: &SynthConfig,
) -> Result<SynthReport, SynthError> {
    config.validate()?;
    let started = Instant::now();
    let tokenizers = fit_tokenizers(config)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    info!(
        fit_seconds,
        codebook_size = config.codebook_size,
        "codebooks fit"
    );

    let started = Instant::now();
    let text = TextTokenizer::from_vocabulary(&caption_words(), &config.text)?;
    let (shards, mut bytes, vocab_sizes) =
        write_split(store, config, &tokenizers, &text, 0..config.samples).await?;
    if config.val_samples > 0 {
        let val = store.child(VAL_DIR);
        let range = config.samples..config.samples + config.val_samples;
        let (val_shards, val_bytes, _) =
            write_split(&val, config, &tokenizers, &text, range).await?;
        bytes += val_bytes;
        info!(
            shards = val_shards,
            samples = config.val_samples,
            "held-out split written"
        );
    }
    let write_seconds = started.elapsed().as_secs_f64();
    info!(
        samples = config.samples,
        val_samples = config.val_samples,
        shards,
        write_seconds,
        "synthetic dataset written"
    );
    Ok(SynthReport {
        samples: config.samples,
        val_samples: config.val_samples,
        shards,
        vocab_sizes,
        fit_seconds,
        write_seconds,
        bytes,
    })
}

/// Writes samples `range` (shards of `shard_samples`, numbered from 0), the tokenizers, the
/// manifest and the index under `store`'s root. Returns (shards, bytes, vocabularies).
async fn write_split(
    store: &DatasetStore,
    config: &SynthConfig,
    tokenizers: &[PatchTokenizer],
    text: &TextTokenizer,
    range: std::ops::Range<u64>,
) -> Result<(u64, u64, BTreeMap<String, u32>), SynthError> {
    let samples = range.end - range.start;
    let shards = samples.div_ceil(config.shard_samples);
    let mut bytes = 0;
    for shard in 0..shards {
        let first = range.start + shard * config.shard_samples;
        let files: Vec<Vec<(String, Vec<u8>)>> = (first
            ..(first + config.shard_samples).min(range.end))
            .into_par_iter()
            .map(|i| sample_files(config, tokenizers, i))
            .collect::<Result<_, SynthError>>()?;
        let mut columns: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for sample in files {
            for (i, (name, data)) in sample.into_iter().enumerate() {
                columns
                    .entry(column_name(config, i))
                    .or_default()
                    .push((name, data));
            }
        }
        for (column, entries) in columns {
            let tar = write_tar(entries.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
            bytes += tar.len() as u64;
            let path = match column.strip_prefix("raw/") {
                Some(raw) => shard_path(&store.root().clone().join(RAW_DIR), raw, shard as u32),
                None => shard_path(store.root(), &column, shard as u32),
            };
            store.put(&path, Bytes::from(tar)).await?;
        }
        info!(shard, samples = config.shard_samples, "shard written");
    }
    let put = |name: String, data: Vec<u8>| async move {
        store
            .put(&store.root().clone().join(name.as_str()), Bytes::from(data))
            .await
    };
    put(TEXT_TOKENIZER_FILE.into(), text.to_json()?.into_bytes()).await?;
    let mut vocab_sizes: BTreeMap<String, u32> = BTreeMap::new();
    for tok in tokenizers {
        let path = store
            .root()
            .clone()
            .join(TOKENIZERS_DIR)
            .join(format!("{}.safetensors", tok.modality).as_str());
        store.put(&path, Bytes::from(tok.to_bytes()?)).await?;
        vocab_sizes.insert(tok.modality.clone(), tok.vocab_size() as u32);
    }
    for text_modality in ["caption", "det"] {
        vocab_sizes.insert(text_modality.into(), text.vocab_size() as u32);
    }
    put(
        MANIFEST_FILE.into(),
        manifest(config, &vocab_sizes).into_bytes(),
    )
    .await?;
    let options = ScanOptions {
        vocab_sizes: vocab_sizes.clone(),
        checksums: false,
    };
    let outcome = scan_dataset(store, &options).await?;
    if let Some((_, e)) = outcome.bad.into_iter().next() {
        return Err(e.into());
    }
    write_index(store, &outcome.index).await?;
    Ok((shards, bytes, vocab_sizes))
}

/// Every word a caption can use (shape names are class tokens of their own).
pub fn caption_words() -> Vec<&'static str> {
    let mut words: Vec<&str> = SIZES.iter().map(|s| s.0).collect();
    words.extend(COLORS.iter().map(|c| c.0));
    words.extend(super::caption::CAPTION_GLUE);
    words
}

/// The column (modality folder) of the `i`-th file [`sample_files`] returns.
fn column_name(config: &SynthConfig, i: usize) -> String {
    let n = IMAGE_MODALITIES.len();
    match i {
        i if i < n => config.token_modality(IMAGE_MODALITIES[i].0),
        i if i < 2 * n => format!("raw/{}", IMAGE_MODALITIES[i - n].0),
        i if i == 2 * n => "caption".into(),
        _ => "det".into(),
    }
}

/// The files of sample `index`: tokens of each image modality, their raw PNGs, caption, boxes.
fn sample_files(
    config: &SynthConfig,
    tokenizers: &[PatchTokenizer],
    index: u64,
) -> Result<Vec<(String, Vec<u8>)>, SynthError> {
    let s = generate_sample(config, index);
    let mut files = Vec::with_capacity(2 * IMAGE_MODALITIES.len() + 2);
    let planes: Vec<ImagePlane> = IMAGE_MODALITIES
        .iter()
        .map(|(_, f)| plane(&s.frame, *f))
        .collect();
    for (tok, p) in tokenizers.iter().zip(&planes) {
        let ids = tok.encode(p)?;
        let npy = npy::encode(npy::Dtype::I16, &[1, ids.len()], &ids).map_err(|source| {
            SynthError::Data(DataError::Npy {
                url: format!("memory://{}", tok.modality),
                entry: format!("{}.npy", s.key),
                source,
            })
        })?;
        files.push((format!("{}.npy", s.key), npy));
    }
    for ((_, format), p) in IMAGE_MODALITIES.iter().zip(&planes) {
        files.push((format!("{}.png", s.key), to_png(p, *format)?));
    }
    files.push((format!("{}.txt", s.key), s.caption.clone().into_bytes()));
    let det = serde_json::to_vec(&s.det).unwrap_or_default();
    files.push((format!("{}.json", s.key), det));
    Ok(files)
}

/// The configuration a dataset was written with, read back from its `synth.json` (the text of
/// the file [`manifest`] wrote).
pub fn written_config(manifest: &str) -> Result<SynthConfig, serde_json::Error> {
    #[derive(Deserialize)]
    struct Written {
        config: SynthConfig,
    }
    Ok(serde_json::from_str::<Written>(manifest)?.config)
}

/// `synth.json`: the config, the vocabularies and what every modality holds.
fn manifest(config: &SynthConfig, vocab_sizes: &BTreeMap<String, u32>) -> String {
    let grid = config.resolution / config.patch;
    let mut modalities = serde_json::Map::new();
    for (raw, format) in IMAGE_MODALITIES {
        let name = config.token_modality(raw);
        modalities.insert(
            name.clone(),
            serde_json::json!({
                "kind": "tokens",
                "grid": [grid, grid],
                "vocab_size": vocab_sizes.get(&name),
                "tokenizer": format!("{TOKENIZERS_DIR}/{name}.safetensors"),
                "codec": config.codec(format),
                "raw": format!("{RAW_DIR}/{raw}"),
                "raw_png": format,
            }),
        );
    }
    for (name, what) in [
        ("caption", "scene caption (.txt)"),
        ("det", "ml-4m boxes of the visible objects (.json)"),
    ] {
        modalities.insert(
            name.into(),
            serde_json::json!({"kind": "text", "what": what, "vocab_size": vocab_sizes.get(name), "tokenizer": TEXT_TOKENIZER_FILE}),
        );
    }
    let value = serde_json::json!({
        "format": "fourm-synth/1",
        "config": config,
        "key_format": "{index:08}, shard = index / shard_samples",
        "modalities": modalities,
        "classes": CLASS_NAMES,
        "colors": COLORS.iter().map(|c| c.0).collect::<Vec<_>>(),
        "sizes": SIZES.iter().map(|s| s.0).collect::<Vec<_>>(),
        "depth_far": DEPTH_FAR,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}
