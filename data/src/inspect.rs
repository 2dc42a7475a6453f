//! What a dataset holds, and what is wrong with it: modalities, counts, token histograms and
//! every validation error, for `fourm data inspect`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::DataError;
use crate::index::{DatasetIndex, ModalityKind};
use crate::layout::index_path;
use crate::reader::{ShardReader, read_index};
use crate::scan::{ScanOptions, scan_dataset};
use crate::shard::{ModalityData, ShardData};
use crate::store::DatasetStore;

/// Histogram bins over `0..vocab_size`.
const BINS: usize = 16;

/// The result of [`inspect`].
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// Dataset URL.
    pub url: String,
    /// Whether `index.json` was read (`false`: the index was built by scanning).
    pub indexed: bool,
    /// The index used.
    pub index: DatasetIndex,
    /// Shards inspected.
    pub shards_read: Vec<u32>,
    /// Samples in the inspected shards that passed validation.
    pub samples_read: u64,
    /// Statistics per modality over the good inspected shards.
    pub stats: BTreeMap<String, ModalityStats>,
    /// Every problem found, one line each, naming the object and entry.
    pub errors: Vec<String>,
}

/// Statistics of one modality.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModalityStats {
    /// Token arrays (all crops).
    Tokens {
        /// Ids seen.
        count: u64,
        /// Smallest id.
        min: Option<i64>,
        /// Largest id.
        max: Option<i64>,
        /// Distinct ids.
        distinct: u64,
        /// Ids per bin of `vocab_size / 16` (the last bin takes the rest).
        histogram: Vec<u64>,
    },
    /// Text entries (crop 0 of aligned lists).
    Text {
        /// Entries.
        entries: u64,
        /// Mean length in characters.
        mean_chars: f64,
        /// Longest entry in characters.
        max_chars: u64,
    },
    /// Crop settings.
    CropSettings {
        /// Crops over all samples.
        crops: u64,
    },
}

/// Inspects the dataset under `store` (one shard with `shard`). Reads `index.json` if present,
/// otherwise scans the shards with `options`. Fails only when nothing can be inspected (the index
/// unparseable, no shard at all, an unknown shard); problems in shards go to
/// [`InspectReport::errors`].
pub async fn inspect(
    store: &DatasetStore,
    shard: Option<u32>,
    options: &ScanOptions,
) -> Result<InspectReport, DataError> {
    let mut errors = Vec::new();
    let (index, indexed) = match read_index(store).await {
        Ok(index) => (index, true),
        Err(DataError::Store {
            source: object_store::Error::NotFound { .. },
            ..
        }) => {
            let outcome = scan_dataset(store, options).await?;
            for (_, e) in &outcome.bad {
                errors.push(error_line(e));
            }
            (outcome.index, false)
        }
        Err(e) => return Err(e),
    };
    let shards: Vec<u32> = match shard {
        Some(s) if index.shard(s).is_none() => {
            let listed = (!indexed)
                .then(|| errors.iter().find(|e| e.contains(&format!("shard-{s:05}"))))
                .flatten();
            match listed {
                // A scan found the shard bad: report that instead of "unknown".
                Some(line) => {
                    let line = line.clone();
                    errors.retain(|e| *e == line);
                    Vec::new()
                }
                None => {
                    return Err(DataError::UnknownShard {
                        url: store.object_url(&index_path(store.root())),
                        shard: s,
                    });
                }
            }
        }
        Some(s) => {
            errors.retain(|e| e.contains(&format!("shard-{s:05}")));
            vec![s]
        }
        None => index.shards.iter().map(|s| s.shard).collect(),
    };
    let reader = ShardReader::new(store.clone(), index.clone());
    let mut stats = Stats::new(&index);
    let mut samples_read = 0;
    for &s in &shards {
        match reader.read_shard(s).await {
            Ok(data) => {
                samples_read += data.len() as u64;
                stats.add(&data);
            }
            Err(e) => errors.push(error_line(&e)),
        }
    }
    Ok(InspectReport {
        url: store.url().to_string(),
        indexed,
        stats: stats.finish(&index),
        index,
        shards_read: shards,
        samples_read,
        errors,
    })
}

/// An error with its chain of causes on one line.
fn error_line(e: &DataError) -> String {
    let mut line = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

struct Stats {
    tokens: BTreeMap<String, (u32, Vec<u64>)>,
    texts: BTreeMap<String, (u64, u64, u64)>,
    crops: u64,
}

impl Stats {
    fn new(index: &DatasetIndex) -> Self {
        let tokens = index
            .modalities
            .iter()
            .filter_map(|(name, info)| {
                let vocab = info.vocab_size?;
                Some((name.clone(), (vocab, vec![0u64; vocab as usize])))
            })
            .collect();
        Self {
            tokens,
            texts: BTreeMap::new(),
            crops: 0,
        }
    }

    fn add(&mut self, data: &ShardData) {
        for (name, (_, counts)) in &mut self.tokens {
            for id in data.token_ids(name) {
                counts[id as usize] += 1; // validated: 0 <= id < vocab
            }
        }
        for i in 0..data.len() {
            self.crops += u64::from(data.crops(i));
            let Some(sample) = data.decode_crop(i, 0) else {
                continue;
            };
            for (name, m) in &sample.modalities {
                let chars = match m {
                    ModalityData::Text(s) => s.chars().count(),
                    ModalityData::Json(v) => v.to_string().chars().count(),
                    ModalityData::Tokens(_) => continue,
                } as u64;
                let t = self.texts.entry(name.clone()).or_default();
                t.0 += 1;
                t.1 += chars;
                t.2 = t.2.max(chars);
            }
        }
    }

    fn finish(self, index: &DatasetIndex) -> BTreeMap<String, ModalityStats> {
        let mut out = BTreeMap::new();
        for (name, (vocab, counts)) in self.tokens {
            let bin = (vocab as usize).div_ceil(BINS).max(1);
            let bins = BINS.min(vocab as usize);
            let mut histogram = vec![0u64; bins];
            for (id, &c) in counts.iter().enumerate() {
                histogram[(id / bin).min(bins - 1)] += c;
            }
            let seen = |id: &usize| counts[*id] > 0;
            out.insert(
                name,
                ModalityStats::Tokens {
                    count: counts.iter().sum(),
                    min: (0..counts.len()).find(seen).map(|i| i as i64),
                    max: (0..counts.len()).rev().find(seen).map(|i| i as i64),
                    distinct: counts.iter().filter(|&&c| c > 0).count() as u64,
                    histogram,
                },
            );
        }
        for (name, (entries, chars, max_chars)) in self.texts {
            let mean_chars = if entries == 0 {
                0.0
            } else {
                chars as f64 / entries as f64
            };
            out.insert(
                name,
                ModalityStats::Text {
                    entries,
                    mean_chars,
                    max_chars,
                },
            );
        }
        for (name, info) in &index.modalities {
            if info.kind == ModalityKind::CropSettings {
                out.insert(
                    name.clone(),
                    ModalityStats::CropSettings { crops: self.crops },
                );
            }
        }
        out
    }
}
