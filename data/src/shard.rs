//! A shard in memory after validation, and the decoded samples it yields.
//!
//! [`validate_shard`] checks everything before a sample can leave the crate: the keys of every
//! modality line up (same keys, same order), each entry has the modality's extension, token arrays
//! have the dtype and shape the index records and every id is below the vocabulary size, text is
//! UTF-8 (and `.json` parses). One violation makes the whole shard bad.
//!
//! A sample uses one crop for all its modalities (ml-4m's `rand_aug_idx`), drawn from its
//! per-sample seed among the crops every one of its arrays has.

use std::collections::BTreeMap;

use crate::error::DataError;
use crate::index::{DatasetIndex, ModalityInfo, ModalityKind};
use crate::npy::NpyArray;
use crate::tarball::TarEntry;
use fourm_plan::derive_seed;

/// Seed-path tag of the crop choice (`"crop"`).
const CROP_TAG: u64 = 0x6372_6f70;

/// One modality's tar of a shard, as read.
#[derive(Debug, Clone)]
pub struct ModalityTar {
    /// Modality name.
    pub modality: String,
    /// URL of the tar (for messages).
    pub url: String,
    /// Its entries in archive order.
    pub entries: Vec<TarEntry>,
}

/// A validated shard.
#[derive(Debug, Clone)]
pub struct ShardData {
    shard: u32,
    keys: Vec<String>,
    /// Crops usable by each sample (≥ 1).
    crops: Vec<u32>,
    columns: Vec<(String, Column)>,
}

#[derive(Debug, Clone)]
enum Column {
    Tokens {
        grid: [u32; 2],
        arrays: Vec<NpyArray>,
    },
    Crops(Vec<NpyArray>),
    Text(Vec<Text>),
}

#[derive(Debug, Clone)]
enum Text {
    Plain(String),
    Json(serde_json::Value),
}

/// A decoded sample: plain data, independent of masking.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSample {
    /// WebDataset key.
    pub key: String,
    /// The crop used by every modality.
    pub crop: u32,
    /// `[top, left, h, w, hflip]` of that crop, when the dataset has `crop_settings`.
    pub crop_settings: Option<[i64; 5]>,
    /// Modalities by name (`crop_settings` is not repeated here).
    pub modalities: BTreeMap<String, ModalityData>,
}

/// One modality of a decoded sample.
#[derive(Debug, Clone, PartialEq)]
pub enum ModalityData {
    /// Token ids of the chosen crop, row-major over the grid.
    Tokens(TokenGrid),
    /// A caption: a `.txt` entry, or the chosen crop's caption of an aligned `.json` list
    /// (elements are strings or `{"caption": …}`), as ml-4m's `CaptionTransform` reads it.
    Text(String),
    /// Any other `.json` entry (e.g. `det` boxes `{"instances": […]}`), parsed.
    Json(serde_json::Value),
}

/// Token ids with their grid shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrid {
    /// `height · width` ids, each in `0..vocab_size`.
    pub ids: Vec<i64>,
    /// Grid rows.
    pub height: u32,
    /// Grid columns.
    pub width: u32,
}

impl ShardData {
    /// Shard number.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Samples in tar order.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the shard has no samples.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys in tar order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Crops available to sample `sample`.
    pub fn crops(&self, sample: usize) -> u32 {
        self.crops[sample]
    }

    /// Every token id of `modality` (all samples, all crops), for statistics.
    pub fn token_ids<'a>(&'a self, modality: &'a str) -> impl Iterator<Item = i64> + 'a {
        self.columns
            .iter()
            .filter(move |(name, _)| name == modality)
            .flat_map(|(_, column)| match column {
                Column::Tokens { arrays, .. } => arrays.as_slice(),
                _ => &[],
            })
            .flat_map(NpyArray::values)
    }

    /// Sample `sample` (tar order) with the crop drawn from `seed`. `None` past the end.
    pub fn decode(&self, sample: usize, seed: u64) -> Option<DecodedSample> {
        let key = self.keys.get(sample)?.clone();
        let crops = u64::from(self.crops[sample]);
        let crop = ((u128::from(derive_seed(&[seed, CROP_TAG])) * u128::from(crops)) >> 64) as u32;
        self.decode_crop(sample, crop).map(|mut d| {
            d.key = key;
            d
        })
    }

    /// Sample `sample` with a given crop (`None` past the end or past its crops).
    pub fn decode_crop(&self, sample: usize, crop: u32) -> Option<DecodedSample> {
        if sample >= self.keys.len() || crop >= self.crops[sample] {
            return None;
        }
        let c = crop as usize;
        let mut crop_settings = None;
        let mut modalities = BTreeMap::new();
        for (name, column) in &self.columns {
            let data = match column {
                Column::Tokens { grid, arrays } => ModalityData::Tokens(TokenGrid {
                    ids: arrays[sample].row(c),
                    height: grid[0],
                    width: grid[1],
                }),
                Column::Crops(arrays) => {
                    let row = arrays[sample].row(c);
                    crop_settings = Some([row[0], row[1], row[2], row[3], row[4]]);
                    continue;
                }
                Column::Text(texts) => match &texts[sample] {
                    Text::Plain(s) => ModalityData::Text(s.clone()),
                    Text::Json(v) => json_for_crop(v, c),
                },
            };
            modalities.insert(name.clone(), data);
        }
        Some(DecodedSample {
            key: self.keys[sample].clone(),
            crop,
            crop_settings,
            modalities,
        })
    }
}

/// ml-4m's caption rule: a list is aligned with the crops; a `{"caption": s}` dict is its string.
fn json_for_crop(value: &serde_json::Value, crop: usize) -> ModalityData {
    let item = match value {
        serde_json::Value::Array(items) => &items[crop.min(items.len() - 1)],
        other => other,
    };
    match item {
        serde_json::Value::String(s) => ModalityData::Text(s.clone()),
        serde_json::Value::Object(map) if value.is_array() => match map.get("caption") {
            Some(serde_json::Value::String(s)) => ModalityData::Text(s.clone()),
            _ => ModalityData::Json(item.clone()),
        },
        other => ModalityData::Json(other.clone()),
    }
}

/// Validates the tars of shard `shard` against `index` (which must list every modality; the
/// sample count is checked when the index lists the shard) and builds the shard.
pub fn validate_shard(
    index: &DatasetIndex,
    shard: u32,
    mut tars: Vec<ModalityTar>,
) -> Result<ShardData, DataError> {
    tars.sort_by(|a, b| a.modality.cmp(&b.modality));
    // The reference is the modality with the most entries, so that a modality that lost a key
    // is the one named.
    let Some(reference) = tars.iter().rev().max_by_key(|t| t.entries.len()) else {
        return Err(DataError::IndexInvalid {
            url: format!("shard {shard}"),
            reason: "no modality to read".into(),
        });
    };
    let keys: Vec<String> = reference.entries.iter().map(|e| e.key.clone()).collect();
    for tar in &tars {
        check_keys(&reference.modality, &keys, tar)?;
    }
    if let Some(info) = index.shard(shard)
        && info.samples != keys.len() as u64
    {
        return Err(DataError::SampleCount {
            url: reference.url.clone(),
            expected: info.samples,
            found: keys.len() as u64,
        });
    }
    let mut crops = vec![u32::MAX; keys.len()];
    let mut columns = Vec::with_capacity(tars.len());
    let mut urls = Vec::with_capacity(tars.len());
    for tar in tars {
        let info = index
            .modalities
            .get(&tar.modality)
            .ok_or_else(|| DataError::BadEntry {
                url: tar.url.clone(),
                entry: String::new(),
                reason: format!("modality {} is not in the index", tar.modality),
            })?;
        let column = validate_column(info, &tar, &mut crops)?;
        urls.push(tar.url);
        columns.push((tar.modality, column));
    }
    // Samples with no array at all have the one "crop" 0.
    for c in &mut crops {
        if *c == u32::MAX {
            *c = 1;
        }
    }
    for ((_, column), url) in columns.iter().zip(&urls) {
        if let Column::Text(texts) = column {
            check_aligned_lists(url, texts, &crops, &keys)?;
        }
    }
    Ok(ShardData {
        shard,
        keys,
        crops,
        columns,
    })
}

fn check_keys(reference: &str, keys: &[String], tar: &ModalityTar) -> Result<(), DataError> {
    let n = keys.len().max(tar.entries.len());
    for i in 0..n {
        let expected = keys.get(i);
        let found = tar.entries.get(i).map(|e| &e.key);
        if expected != found {
            return Err(DataError::KeyMismatch {
                url: tar.url.clone(),
                position: i as u64,
                reference: reference.to_string(),
                expected: expected.cloned(),
                found: found.cloned(),
            });
        }
    }
    Ok(())
}

fn validate_column(
    info: &ModalityInfo,
    tar: &ModalityTar,
    crops: &mut [u32],
) -> Result<Column, DataError> {
    let url = &tar.url;
    let mut arrays = Vec::new();
    let mut texts = Vec::new();
    for (i, entry) in tar.entries.iter().enumerate() {
        let shape_error = |reason: String| DataError::Shape {
            url: url.clone(),
            entry: entry.name.clone(),
            reason,
        };
        if entry.ext != info.extension {
            return Err(DataError::BadEntry {
                url: url.clone(),
                entry: entry.name.clone(),
                reason: format!(
                    "extension {:?}, the index says {:?}",
                    entry.ext, info.extension
                ),
            });
        }
        match info.kind {
            ModalityKind::Tokens | ModalityKind::CropSettings => {
                let array =
                    NpyArray::parse(entry.data.clone()).map_err(|source| DataError::Npy {
                        url: url.clone(),
                        entry: entry.name.clone(),
                        source,
                    })?;
                if let Some(dtype) = &info.dtype
                    && array.dtype.descr() != *dtype
                {
                    return Err(shape_error(format!(
                        "dtype {}, the index says {dtype}",
                        array.dtype.descr()
                    )));
                }
                let width = match info.kind {
                    ModalityKind::Tokens => info.tokens_per_crop().unwrap_or(0),
                    _ => 5,
                };
                let rows = match array.shape[..] {
                    [n, w] if w == width && n > 0 => n,
                    [w] if w == width && info.kind == ModalityKind::Tokens => 1,
                    _ => {
                        return Err(shape_error(format!(
                            "shape {:?}, expected (n_crops ≥ 1, {width})",
                            array.shape
                        )));
                    }
                };
                crops[i] = crops[i].min(rows.min(u32::MAX as usize - 1) as u32);
                if let Some(vocab_size) = info.vocab_size {
                    check_ids(url, &entry.name, &array, vocab_size)?;
                }
                arrays.push(array);
            }
            ModalityKind::Text => {
                let text = std::str::from_utf8(&entry.data).map_err(|e| DataError::Text {
                    url: url.clone(),
                    entry: entry.name.clone(),
                    reason: format!("not UTF-8: {e}"),
                })?;
                texts.push(if entry.ext == "json" {
                    Text::Json(serde_json::from_str(text).map_err(|e| DataError::Text {
                        url: url.clone(),
                        entry: entry.name.clone(),
                        reason: format!("bad JSON: {e}"),
                    })?)
                } else {
                    Text::Plain(text.to_string())
                });
            }
        }
    }
    Ok(match info.kind {
        ModalityKind::Tokens => Column::Tokens {
            grid: info.token_shape.unwrap_or([0, 0]),
            arrays,
        },
        ModalityKind::CropSettings => Column::Crops(arrays),
        ModalityKind::Text => Column::Text(texts),
    })
}

fn check_ids(url: &str, entry: &str, array: &NpyArray, vocab_size: u32) -> Result<(), DataError> {
    match array.find_outside(0, i64::from(vocab_size)) {
        None => Ok(()),
        Some((position, id)) => Err(DataError::TokenOutOfRange {
            url: url.to_string(),
            entry: entry.to_string(),
            id,
            position,
            vocab_size,
        }),
    }
}

/// An aligned caption list must cover every crop its sample can draw.
fn check_aligned_lists(
    url: &str,
    texts: &[Text],
    crops: &[u32],
    keys: &[String],
) -> Result<(), DataError> {
    for (i, text) in texts.iter().enumerate() {
        if let Text::Json(serde_json::Value::Array(items)) = text
            && items.len() < crops[i] as usize
        {
            return Err(DataError::Text {
                url: url.to_string(),
                entry: format!("{}.json", keys[i]),
                reason: format!(
                    "aligned list has {} item(s), the sample has {} crop(s)",
                    items.len(),
                    crops[i]
                ),
            });
        }
    }
    Ok(())
}
