//! Small seeded datasets in ml-4m's layout, for tests and benchmarks: two token modalities
//! (`tok_rgb@224`, `tok_depth@224`, int16 `.npy` of shape `(crops, grid²)`), a `caption` (`.txt`),
//! `det` boxes (`.json`) and `crop_settings`. Every byte is a function of the spec, so a test can
//! regenerate what it wrote and compare.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::Rng;

use crate::error::DataError;
use crate::index::DatasetIndex;
use crate::layout::{CROP_SETTINGS, shard_path};
use crate::npy::{Dtype, encode};
use crate::reader::write_index;
use crate::scan::{ScanOptions, scan_dataset};
use crate::shard::{DecodedSample, ModalityData, TokenGrid};
use crate::store::DatasetStore;
use crate::tarball::write_tar;
use fourm_plan::rng_for;

/// Token modalities of the fixture with their (ml-4m) vocabulary sizes.
pub const TOKEN_MODALITIES: [(&str, u32); 2] = [("tok_depth@224", 8_192), ("tok_rgb@224", 16_384)];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixtureSpec {
    /// Shards `0..shards`.
    pub shards: u32,
    /// Samples in shard `s` (shards alternate between this and one less, so sizes differ).
    pub samples_per_shard: u32,
    /// Crops per sample.
    pub crops: u32,
    /// Token grid side (14 for ml-4m's 224-pixel tokenizers).
    pub grid: u32,
    /// Seed of all contents.
    pub seed: u64,
}

impl Default for FixtureSpec {
    fn default() -> Self {
        Self {
            shards: 3,
            samples_per_shard: 5,
            crops: 2,
            grid: 14,
            seed: 1,
        }
    }
}

/// One generated sample.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureSample {
    /// Key.
    pub key: String,
    /// Token ids per token modality, per crop.
    pub tokens: BTreeMap<String, Vec<Vec<i64>>>,
    /// Caption.
    pub caption: String,
    /// `det` boxes.
    pub det: serde_json::Value,
    /// Crop settings per crop.
    pub crop_settings: Vec<[i64; 5]>,
}

/// One generated shard: its samples and each modality's tar bytes.
#[derive(Debug, Clone)]
pub struct FixtureShard {
    /// Shard number.
    pub shard: u32,
    /// Samples in tar order.
    pub samples: Vec<FixtureSample>,
    /// Tar bytes by modality.
    pub tars: BTreeMap<String, Vec<u8>>,
}

impl FixtureSpec {
    /// Samples of shard `shard`.
    pub fn samples_in(&self, shard: u32) -> u32 {
        self.samples_per_shard - (shard % 2).min(self.samples_per_shard.saturating_sub(1))
    }

    /// Generates shard `shard`.
    pub fn shard(&self, shard: u32) -> FixtureShard {
        let n = self.samples_in(shard);
        let first = u64::from(shard) * u64::from(self.samples_per_shard);
        let samples: Vec<FixtureSample> = (0..n)
            .map(|i| self.sample(shard, i, first + u64::from(i)))
            .collect();
        let mut files: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        let per_crop = (self.grid * self.grid) as usize;
        let shape = [self.crops as usize, per_crop];
        for s in &samples {
            for (m, crops) in &s.tokens {
                let flat: Vec<i64> = crops.iter().flatten().copied().collect();
                let npy = encode(Dtype::I16, &shape, &flat).expect("fixture ids fit int16");
                files
                    .entry(m.clone())
                    .or_default()
                    .push((format!("{}.npy", s.key), npy));
            }
            let flat: Vec<i64> = s.crop_settings.iter().flatten().copied().collect();
            let npy = encode(Dtype::I16, &[self.crops as usize, 5], &flat).expect("fits int16");
            files
                .entry(CROP_SETTINGS.into())
                .or_default()
                .push((format!("{}.npy", s.key), npy));
            files
                .entry("caption".into())
                .or_default()
                .push((format!("{}.txt", s.key), s.caption.clone().into_bytes()));
            files
                .entry("det".into())
                .or_default()
                .push((format!("{}.json", s.key), s.det.to_string().into_bytes()));
        }
        let tars = files
            .into_iter()
            .map(|(m, entries)| {
                let tar = write_tar(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
                (m, tar)
            })
            .collect();
        FixtureShard {
            shard,
            samples,
            tars,
        }
    }

    fn sample(&self, shard: u32, i: u32, global: u64) -> FixtureSample {
        let mut rng = rng_for(&[self.seed, u64::from(shard), u64::from(i)]);
        let per_crop = (self.grid * self.grid) as usize;
        let tokens = TOKEN_MODALITIES
            .iter()
            .map(|&(m, vocab)| {
                let crops = (0..self.crops)
                    .map(|_| {
                        (0..per_crop)
                            .map(|_| rng.random_range(0..i64::from(vocab)))
                            .collect()
                    })
                    .collect();
                (m.to_string(), crops)
            })
            .collect();
        let crop_settings = (0..self.crops)
            .map(|c| {
                let side = rng.random_range(100..=224);
                [
                    rng.random_range(0..=224 - side),
                    rng.random_range(0..=224 - side),
                    side,
                    side,
                    i64::from(c > 0 && rng.random_bool(0.5)),
                ]
            })
            .collect();
        let words = [
            "a", "dog", "on", "the", "red", "sofa", "near", "two", "cats",
        ];
        let len = rng.random_range(3..12);
        let caption = (0..len)
            .map(|_| words[rng.random_range(0..words.len())])
            .collect::<Vec<_>>()
            .join(" ");
        let det = serde_json::json!({"instances": [{
            "boxes": [0.1, 0.2, 0.5, f64::from(rng.random_range(600u32..1000)) / 1000.0],
            "class_name": "dog",
            "score": 0.9,
        }]});
        FixtureSample {
            key: format!("{global:08}"),
            tokens,
            caption,
            det,
            crop_settings,
        }
    }
}

impl FixtureSample {
    /// The sample a reader should decode with crop `crop`.
    pub fn expected(&self, crop: u32) -> DecodedSample {
        let c = crop as usize;
        let side = (self.tokens.values().next().map_or(0, |t| t[0].len()) as f64).sqrt() as u32;
        let mut modalities: BTreeMap<String, ModalityData> = self
            .tokens
            .iter()
            .map(|(m, crops)| {
                let grid = TokenGrid {
                    ids: crops[c].clone(),
                    height: side,
                    width: side,
                };
                (m.clone(), ModalityData::Tokens(grid))
            })
            .collect();
        modalities.insert("caption".into(), ModalityData::Text(self.caption.clone()));
        modalities.insert("det".into(), ModalityData::Json(self.det.clone()));
        DecodedSample {
            key: self.key.clone(),
            crop,
            crop_settings: Some(self.crop_settings[c]),
            modalities,
        }
    }
}

/// Writes the spec's shards to `store` one at a time, then scans them and writes `index.json`
/// (with checksums when `checksums`). Returns the index.
pub async fn write_fixture(
    store: &DatasetStore,
    spec: &FixtureSpec,
    checksums: bool,
) -> Result<DatasetIndex, DataError> {
    for s in 0..spec.shards {
        write_shard(store, &spec.shard(s)).await?;
    }
    let options = ScanOptions {
        checksums,
        ..ScanOptions::default()
    };
    let outcome = scan_dataset(store, &options).await?;
    if let Some((_, e)) = outcome.bad.into_iter().next() {
        return Err(e);
    }
    write_index(store, &outcome.index).await?;
    Ok(outcome.index)
}

/// Writes one generated shard's tars.
pub async fn write_shard(store: &DatasetStore, shard: &FixtureShard) -> Result<(), DataError> {
    for (m, tar) in &shard.tars {
        let path = shard_path(store.root(), m, shard.shard);
        store.put(&path, Bytes::from(tar.clone())).await?;
    }
    Ok(())
}
