//! A held-out split of a synthetic dataset, read for evaluation: per sample its token grids,
//! caption, boxes and raw pictures (the ground truth of decoded-pixel metrics), with the image
//! tokenizers and the text tokenizer that turn tokens into pictures and text.

use std::collections::BTreeMap;

use fourm_data::{DatasetStore, DecodedSample, ModalityData, ShardReader, read_tar, shard_path};
use fourm_masking::{COORD_BINS, DET_THRESHOLD, Detections, TextTokenizer};
use fourm_synth::dataset::{IMAGE_MODALITIES, RAW_DIR, TEXT_TOKENIZER_FILE, TOKENIZERS_DIR};
use fourm_synth::{ImagePlane, PatchTokenizer, RawFormat, from_png};

use crate::error::EvalError;

/// One held-out sample.
#[derive(Debug, Clone)]
pub struct EvalSample {
    /// Its key.
    pub key: String,
    /// As the data pipeline decodes it (for the held-out loss).
    pub decoded: DecodedSample,
    /// Token grids by image kind (`rgb`, `depth`, `normal`, `semseg`).
    pub tokens: BTreeMap<String, Vec<i64>>,
    /// Raw pictures by image kind.
    pub raw: BTreeMap<String, ImagePlane>,
    /// The caption.
    pub caption: String,
    /// The boxes.
    pub det: Detections,
}

impl EvalSample {
    /// The boxes as the model reads and writes them (ml-4m's det text).
    pub fn det_text(&self) -> String {
        self.det.to_text(DET_THRESHOLD, COORD_BINS)
    }
}

/// The samples of a split and what decodes their tokens.
#[derive(Debug)]
pub struct EvalSet {
    /// Samples, in index order.
    pub samples: Vec<EvalSample>,
    /// Image tokenizers by kind.
    pub tokenizers: BTreeMap<String, PatchTokenizer>,
    /// Token modality name by kind (`rgb` → `tok_rgb@64`).
    pub modalities: BTreeMap<String, String>,
    /// The caption / det text tokenizer.
    pub text: TextTokenizer,
}

impl EvalSet {
    /// Reads the first `limit` samples of the split at `store` (a synthetic dataset, or its
    /// `val/` split).
    pub async fn load(store: &DatasetStore, limit: usize) -> Result<Self, EvalError> {
        let reader = ShardReader::open(store.clone()).await?;
        let index = reader.index().clone();
        let mut modalities = BTreeMap::new();
        for (kind, _) in IMAGE_MODALITIES {
            if let Some(m) = index
                .modalities
                .keys()
                .find(|m| m.strip_prefix("tok_").and_then(|r| r.split('@').next()) == Some(kind))
            {
                modalities.insert(kind.to_string(), m.clone());
            }
        }
        let mut tokenizers = BTreeMap::new();
        for (kind, modality) in &modalities {
            let path = store
                .root()
                .clone()
                .join(TOKENIZERS_DIR)
                .join(format!("{modality}.safetensors").as_str());
            let bytes = store.get(&path).await?;
            tokenizers.insert(kind.clone(), PatchTokenizer::from_bytes(&bytes, modality)?);
        }
        let text_bytes = store
            .get(&store.root().clone().join(TEXT_TOKENIZER_FILE))
            .await?;
        let text = TextTokenizer::from_json(&text_bytes, TEXT_TOKENIZER_FILE)?;
        let mut samples = Vec::new();
        for info in &index.shards {
            if samples.len() >= limit {
                break;
            }
            let shard = reader.read_shard(info.shard).await?;
            let mut raw: BTreeMap<String, BTreeMap<String, ImagePlane>> = BTreeMap::new();
            for (kind, format) in IMAGE_MODALITIES {
                let path = shard_path(&store.root().clone().join(RAW_DIR), kind, info.shard);
                let url = store.object_url(&path);
                let bytes = store.get(&path).await?;
                for entry in read_tar(&url, &bytes)? {
                    let plane = from_png(&entry.data, format, &format!("{url}/{}", entry.name))?;
                    raw.entry(entry.key.clone())
                        .or_default()
                        .insert(kind.to_string(), plane);
                }
            }
            for i in 0..shard.len() {
                if samples.len() >= limit {
                    break;
                }
                let decoded = shard.decode_crop(i, 0).ok_or_else(|| EvalError::Sample {
                    key: format!("shard {} sample {i}", info.shard),
                    reason: "cannot be decoded".into(),
                })?;
                samples.push(sample(decoded, &modalities, &mut raw)?);
            }
        }
        if samples.is_empty() {
            return Err(EvalError::Sample {
                key: store.url().to_string(),
                reason: "the split holds no samples".into(),
            });
        }
        Ok(Self {
            samples,
            tokenizers,
            modalities,
            text,
        })
    }

    /// The raw format of an image kind.
    pub fn format(kind: &str) -> Option<RawFormat> {
        RawFormat::of_modality(kind)
    }
}

fn sample(
    decoded: DecodedSample,
    modalities: &BTreeMap<String, String>,
    raw: &mut BTreeMap<String, BTreeMap<String, ImagePlane>>,
) -> Result<EvalSample, EvalError> {
    let bad = |reason: String| EvalError::Sample {
        key: decoded.key.clone(),
        reason,
    };
    let mut tokens = BTreeMap::new();
    for (kind, modality) in modalities {
        match decoded.modalities.get(modality) {
            Some(ModalityData::Tokens(grid)) => {
                tokens.insert(kind.clone(), grid.ids.clone());
            }
            _ => return Err(bad(format!("no tokens of {modality}"))),
        }
    }
    let caption = match decoded.modalities.get("caption") {
        Some(ModalityData::Text(t)) => t.clone(),
        _ => return Err(bad("no caption".into())),
    };
    let det = match decoded.modalities.get("det") {
        Some(ModalityData::Json(v)) => serde_json::from_value(v.clone())
            .map_err(|e| bad(format!("det is not ml-4m box JSON: {e}")))?,
        _ => return Err(bad("no det boxes".into())),
    };
    let raw = raw
        .remove(&decoded.key)
        .ok_or_else(|| bad("no raw pictures".into()))?;
    Ok(EvalSample {
        key: decoded.key.clone(),
        decoded,
        tokens,
        raw,
        caption,
        det,
    })
}
