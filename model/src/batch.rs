//! The model's input: per-modality token ids and masks exactly as ml-4m's masking emits them
//! (a `mod_dict`), held on the host. Every boolean is "True = masked out / not used".

use std::collections::BTreeMap;

use crate::error::ModelError;
use crate::modality::{Modalities, ModalityKind, ModalitySpec};

/// The `tensor` entry of one modality.
#[derive(Debug, Clone, PartialEq)]
pub enum ModalityData {
    /// Token ids, `[batch, tensor_len]` row-major.
    Tokens(Vec<i64>),
    /// Pixels `[batch, channels, height, width]` (pixel modalities only).
    Pixels(Vec<f32>),
}

/// One modality of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityBatch {
    /// Token ids or pixels.
    pub data: ModalityData,
    /// `[batch, tensor_len]`: true = not an encoder input.
    pub input_mask: Vec<bool>,
    /// `[batch, tensor_len]`: true = not a decoder target. May be empty for input-only modalities.
    pub target_mask: Vec<bool>,
    /// `[batch, tensor_len]`: ml-4m's compressed decoder attention mask (images: the number of
    /// targets at the first target position; sequences: 1 at every target). May be empty for
    /// input-only modalities.
    pub decoder_attention_mask: Vec<i32>,
}

impl ModalityBatch {
    /// Token ids with their three masks.
    pub fn tokens(
        ids: Vec<i64>,
        input_mask: Vec<bool>,
        target_mask: Vec<bool>,
        attention: Vec<i32>,
    ) -> Self {
        Self {
            data: ModalityData::Tokens(ids),
            input_mask,
            target_mask,
            decoder_attention_mask: attention,
        }
    }

    /// Token ids of row `b` (empty for pixel data).
    pub fn ids(&self) -> &[i64] {
        match &self.data {
            ModalityData::Tokens(ids) => ids,
            ModalityData::Pixels(_) => &[],
        }
    }
}

/// A batch: for each modality present, its data and masks. Modalities are kept sorted by name,
/// the order ml-4m's loader produces and its encoder concatenates in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// Samples in the batch.
    pub batch_size: usize,
    /// Modality name → data.
    pub modalities: BTreeMap<String, ModalityBatch>,
}

impl Batch {
    /// An empty batch of `batch_size` samples.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            modalities: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) one modality.
    pub fn with(mut self, name: &str, data: ModalityBatch) -> Self {
        self.modalities.insert(name.to_string(), data);
        self
    }

    /// Splits the batch into at most `parts` batches of consecutive samples (sizes differ by at
    /// most one).
    pub fn split(&self, parts: usize) -> Vec<Batch> {
        let parts = parts.clamp(1, self.batch_size.max(1));
        let (base, extra) = (self.batch_size / parts, self.batch_size % parts);
        let mut start = 0;
        (0..parts)
            .map(|i| {
                let size = base + usize::from(i < extra);
                let range = start..start + size;
                start += size;
                self.samples(range)
            })
            .collect()
    }

    /// The samples `range` of the batch.
    pub fn samples(&self, range: std::ops::Range<usize>) -> Batch {
        let modalities = self
            .modalities
            .iter()
            .map(|(name, m)| {
                let per = |len: usize| len / self.batch_size.max(1);
                let cut = |len: usize| range.start * per(len)..range.end * per(len);
                let data = match &m.data {
                    ModalityData::Tokens(ids) => ModalityData::Tokens(ids[cut(ids.len())].to_vec()),
                    ModalityData::Pixels(px) => ModalityData::Pixels(px[cut(px.len())].to_vec()),
                };
                let part = ModalityBatch {
                    data,
                    input_mask: m.input_mask[cut(m.input_mask.len())].to_vec(),
                    target_mask: m.target_mask[cut(m.target_mask.len())].to_vec(),
                    decoder_attention_mask: m.decoder_attention_mask
                        [cut(m.decoder_attention_mask.len())]
                    .to_vec(),
                };
                (name.clone(), part)
            })
            .collect();
        Batch {
            batch_size: range.len(),
            modalities,
        }
    }

    /// Checks the batch against a model's modalities: known names, lengths, id ranges.
    pub fn validate(&self, modalities: &Modalities) -> Result<(), ModelError> {
        if self.batch_size == 0 {
            return Err(ModelError::batch("*", "empty batch"));
        }
        if self.modalities.is_empty() {
            return Err(ModelError::batch("*", "no modality in the batch"));
        }
        for (name, m) in &self.modalities {
            let spec = modalities
                .get(name)
                .ok_or_else(|| ModelError::batch(name, "not a modality of this model"))?;
            self.validate_modality(spec, m)?;
        }
        Ok(())
    }

    fn validate_modality(&self, spec: &ModalitySpec, m: &ModalityBatch) -> Result<(), ModelError> {
        let name = spec.name.as_str();
        let rows = self.batch_size * spec.tensor_len();
        let check_len = |what: &str, len: usize, optional: bool| {
            if len == rows || (optional && len == 0) {
                Ok(())
            } else {
                Err(ModelError::batch(
                    name,
                    format!(
                        "{what} has {len} entries, expected {} × {}",
                        self.batch_size,
                        spec.tensor_len()
                    ),
                ))
            }
        };
        check_len("input_mask", m.input_mask.len(), false)?;
        check_len("target_mask", m.target_mask.len(), spec.input_only)?;
        check_len(
            "decoder_attention_mask",
            m.decoder_attention_mask.len(),
            spec.input_only,
        )?;
        if spec.input_only && m.target_mask.iter().any(|&masked| !masked) {
            return Err(ModelError::batch(
                name,
                "input-only modality has decoder targets",
            ));
        }
        if let Some(v) = m.decoder_attention_mask.iter().find(|&&v| v < 0) {
            return Err(ModelError::batch(
                name,
                format!("negative decoder attention value {v}"),
            ));
        }
        match (&m.data, spec.kind) {
            (
                ModalityData::Tokens(ids),
                ModalityKind::ImageTokens { .. } | ModalityKind::Sequence { .. },
            ) => {
                check_len("tensor", ids.len(), false)?;
                if let Some(bad) = ids
                    .iter()
                    .find(|&&id| id < 0 || id as usize >= spec.vocab_size)
                {
                    return Err(ModelError::batch(
                        name,
                        format!(
                            "token id {bad} outside the vocabulary 0..{}",
                            spec.vocab_size
                        ),
                    ));
                }
            }
            (
                ModalityData::Pixels(px),
                ModalityKind::ImagePixels {
                    grid,
                    patch_size,
                    channels,
                },
            ) => {
                let expected =
                    self.batch_size * channels * grid[0] * patch_size * grid[1] * patch_size;
                if px.len() != expected {
                    return Err(ModelError::batch(
                        name,
                        format!("{} pixel values, expected {expected}", px.len()),
                    ));
                }
                if px.iter().any(|v| !v.is_finite()) {
                    return Err(ModelError::batch(name, "non-finite pixel value"));
                }
            }
            _ => {
                return Err(ModelError::batch(
                    name,
                    "data kind does not match the modality kind",
                ));
            }
        }
        Ok(())
    }
}
