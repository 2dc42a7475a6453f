//! The dataset index, `<root>/index.json`: what every shard holds, so that readers can plan and
//! validate without listing the bucket. It is built by scanning the shards (see
//! [`crate::scan_dataset`]) and read by everything else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use fourm_plan::{EpochPlan, PlanError, ShardSize};

use crate::error::DataError;

/// The index format this crate reads and writes.
pub const INDEX_FORMAT_VERSION: u32 = 1;

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetIndex {
    /// Format version ([`INDEX_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Modalities by directory name (e.g. `tok_rgb@224`, `caption`, `crop_settings`).
    pub modalities: BTreeMap<String, ModalityInfo>,
    /// Shards, sorted by number.
    pub shards: Vec<ShardInfo>,
}

/// What the entries of a modality hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModalityKind {
    /// `.npy` integer token ids, shape `(n_crops, H·W)`.
    Tokens,
    /// `.txt` or `.json` text (captions, boxes, metadata).
    Text,
    /// ml-4m's `crop_settings`: `.npy` of shape `(n_crops, 5)` = `[top, left, h, w, hflip]`.
    CropSettings,
}

/// One modality of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityInfo {
    /// Kind of entries.
    pub kind: ModalityKind,
    /// Extension of every entry (`npy`, `txt`, `json`).
    pub extension: String,
    /// Token vocabulary size (tokens only): every id is in `0..vocab_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u32>,
    /// Token grid `[H, W]` (tokens only): each crop holds `H·W` ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_shape: Option<[u32; 2]>,
    /// numpy dtype of every array (`<i2` for ml-4m's tokens), when recorded; arrays of
    /// another dtype are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// Most shards an index may list.
pub const MAX_SHARDS: usize = 10_000_000;
/// Most samples a shard may hold (ml-4m's shards hold about a thousand).
pub const MAX_SHARD_SAMPLES: u64 = 1_000_000;
/// Largest tar a shard may have per modality (it is read into memory whole).
pub const MAX_SHARD_BYTES: u64 = 16 << 30;

/// One shard of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// Shard number (`shard-NNNNN.tar`).
    pub shard: u32,
    /// Samples (keys) in the shard.
    pub samples: u64,
    /// Size in bytes of each modality's tar.
    pub bytes: BTreeMap<String, u64>,
    /// SHA-256 (lowercase hex) of each modality's tar, when the index was built with checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<BTreeMap<String, String>>,
}

impl ModalityInfo {
    /// Ids per crop (`H·W`) of a token modality.
    pub fn tokens_per_crop(&self) -> Option<usize> {
        self.token_shape.map(|[h, w]| h as usize * w as usize)
    }

    fn check(&self, name: &str) -> Result<(), String> {
        let allowed: &[&str] = match self.kind {
            ModalityKind::Tokens | ModalityKind::CropSettings => &["npy"],
            ModalityKind::Text => &["txt", "json"],
        };
        if !allowed.contains(&self.extension.as_str()) {
            return Err(format!(
                "modality {name}: extension {:?} is not one of {allowed:?}",
                self.extension
            ));
        }
        match self.kind {
            ModalityKind::Tokens => {
                if self.vocab_size.is_none_or(|v| v == 0) {
                    return Err(format!("modality {name}: tokens need a vocab_size > 0"));
                }
                if self.token_shape.is_none_or(|[h, w]| h == 0 || w == 0) {
                    return Err(format!(
                        "modality {name}: tokens need a non-empty token_shape"
                    ));
                }
            }
            ModalityKind::CropSettings => {}
            ModalityKind::Text => {
                if self.dtype.is_some() {
                    return Err(format!("modality {name}: text has no dtype"));
                }
            }
        }
        if let Some(d) = &self.dtype {
            crate::npy::Dtype::parse(d).map_err(|e| format!("modality {name}: {e}"))?;
        }
        match self.kind {
            ModalityKind::Tokens => {}
            ModalityKind::Text | ModalityKind::CropSettings => {
                if self.vocab_size.is_some() || self.token_shape.is_some() {
                    return Err(format!(
                        "modality {name}: vocab_size and token_shape are for tokens only"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl DatasetIndex {
    /// Checks the index is consistent; `url` names it in the error.
    pub fn validate(&self, url: &str) -> Result<(), DataError> {
        let invalid = |reason: String| DataError::IndexInvalid {
            url: url.to_string(),
            reason,
        };
        if self.format_version != INDEX_FORMAT_VERSION {
            return Err(invalid(format!(
                "format_version {} (this reader knows {INDEX_FORMAT_VERSION})",
                self.format_version
            )));
        }
        if self.modalities.is_empty() {
            return Err(invalid("no modalities".into()));
        }
        for (name, info) in &self.modalities {
            if name.is_empty() || name.contains('/') {
                return Err(invalid(format!("bad modality name {name:?}")));
            }
            info.check(name).map_err(invalid)?;
        }
        if self.shards.is_empty() {
            return Err(invalid("no shards".into()));
        }
        for pair in self.shards.windows(2) {
            if pair[0].shard >= pair[1].shard {
                return Err(invalid(format!(
                    "shards must be sorted and unique: {} before {}",
                    pair[0].shard, pair[1].shard
                )));
            }
        }
        if self.shards.len() > MAX_SHARDS {
            return Err(invalid(format!(
                "{} shards (at most {MAX_SHARDS})",
                self.shards.len()
            )));
        }
        for s in &self.shards {
            // Bounds, so that a bad index cannot make a reader allocate without limit (the epoch
            // plan holds a permutation of every shard's samples; a shard is read whole).
            if s.samples > MAX_SHARD_SAMPLES {
                return Err(invalid(format!(
                    "shard {}: {} samples (at most {MAX_SHARD_SAMPLES})",
                    s.shard, s.samples
                )));
            }
            if let Some((m, &b)) = s.bytes.iter().find(|&(_, &b)| b > MAX_SHARD_BYTES) {
                return Err(invalid(format!(
                    "shard {} of {m}: {b} bytes (at most {MAX_SHARD_BYTES})",
                    s.shard
                )));
            }
            let names: Vec<&String> = self.modalities.keys().collect();
            if s.bytes.keys().collect::<Vec<_>>() != names {
                return Err(invalid(format!(
                    "shard {}: byte sizes are listed for {:?}, the modalities are {names:?}",
                    s.shard,
                    s.bytes.keys().collect::<Vec<_>>()
                )));
            }
            if let Some(sums) = &s.sha256
                && sums.keys().collect::<Vec<_>>() != names
            {
                return Err(invalid(format!(
                    "shard {}: checksums do not cover exactly the modalities",
                    s.shard
                )));
            }
        }
        Ok(())
    }

    /// Parses and validates `index.json`.
    pub fn from_json(url: &str, json: &[u8]) -> Result<Self, DataError> {
        let index: Self = serde_json::from_slice(json).map_err(|source| DataError::IndexParse {
            url: url.to_string(),
            source,
        })?;
        index.validate(url)?;
        Ok(index)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the index serialises")
    }

    /// The shard `shard`, if listed.
    pub fn shard(&self, shard: u32) -> Option<&ShardInfo> {
        self.shards
            .binary_search_by_key(&shard, |s| s.shard)
            .ok()
            .map(|i| &self.shards[i])
    }

    /// Total samples.
    pub fn samples(&self) -> u64 {
        self.shards.iter().map(|s| s.samples).sum()
    }

    /// Total bytes of all tars.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().flat_map(|s| s.bytes.values()).sum()
    }

    /// The epoch plan of this dataset for `seed`.
    pub fn plan(&self, seed: u64) -> Result<EpochPlan, PlanError> {
        EpochPlan::new(
            seed,
            self.shards
                .iter()
                .map(|s| ShardSize {
                    shard: s.shard,
                    samples: s.samples,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> DatasetIndex {
        let tokens = ModalityInfo {
            kind: ModalityKind::Tokens,
            extension: "npy".into(),
            vocab_size: Some(16_384),
            token_shape: Some([14, 14]),
            dtype: Some("<i2".into()),
        };
        let caption = ModalityInfo {
            kind: ModalityKind::Text,
            extension: "txt".into(),
            vocab_size: None,
            token_shape: None,
            dtype: None,
        };
        let bytes = |a, b| BTreeMap::from([("caption".to_string(), a), ("tok_rgb@224".into(), b)]);
        DatasetIndex {
            format_version: INDEX_FORMAT_VERSION,
            modalities: BTreeMap::from([
                ("caption".into(), caption),
                ("tok_rgb@224".into(), tokens),
            ]),
            shards: vec![
                ShardInfo {
                    shard: 0,
                    samples: 3,
                    bytes: bytes(10, 20),
                    sha256: None,
                },
                ShardInfo {
                    shard: 4,
                    samples: 5,
                    bytes: bytes(30, 40),
                    sha256: None,
                },
            ],
        }
    }

    #[test]
    fn json_round_trip_and_plan() {
        let i = index();
        let back = DatasetIndex::from_json("mem://i", i.to_json().as_bytes()).unwrap();
        assert_eq!(back, i);
        assert_eq!(i.samples(), 8);
        assert_eq!(i.bytes(), 100);
        assert_eq!(i.shard(4).unwrap().samples, 5);
        assert!(i.shard(1).is_none());
        let plan = i.plan(7).unwrap();
        assert_eq!(plan.samples_per_epoch(), 8);
        assert_eq!(plan.shards().len(), 2);
    }

    #[test]
    fn invalid_indexes_are_refused() {
        let check = |f: &dyn Fn(&mut DatasetIndex)| {
            let mut i = index();
            f(&mut i);
            DatasetIndex::from_json("mem://i", i.to_json().as_bytes()).unwrap_err()
        };
        check(&|i| i.format_version = 2);
        check(&|i| i.shards.swap(0, 1));
        check(&|i| i.shards[1].bytes.remove("caption").map(drop).unwrap_or(()));
        check(&|i| i.modalities.get_mut("tok_rgb@224").unwrap().vocab_size = None);
        check(&|i| i.modalities.get_mut("caption").unwrap().extension = "npy".into());
        check(&|i| i.modalities.get_mut("tok_rgb@224").unwrap().dtype = Some("<f4".into()));
        // Sizes a reader would have to allocate without bound.
        let e = check(&|i| i.shards[0].samples = u64::MAX).to_string();
        assert!(e.contains("samples (at most"), "{e}");
        let e = check(&|i| *i.shards[0].bytes.get_mut("caption").unwrap() = 1 << 50).to_string();
        assert!(e.contains("bytes (at most"), "{e}");
        let err = DatasetIndex::from_json("mem://i", b"{\"format_version\": 1, \"x\": 2}");
        assert!(matches!(err, Err(DataError::IndexParse { .. })));
    }
}
