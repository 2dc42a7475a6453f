//! What masking produces: per modality the `tensor`, `input_mask`, `target_mask` and compressed
//! `decoder_attention_mask` of ml-4m's `mod_dict`, with exactly the semantics of
//! `fourm_model::ModalityBatch` (this crate does not depend on the model; the worker copies the
//! fields across). Every boolean is "true = masked out / not used".

use std::collections::BTreeMap;

/// The `tensor` entry of one modality.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskedTensor {
    /// Token ids: the flattened grid of an image-like modality, or the `2·(max_tokens+1)` span
    /// layout of a sequence.
    Tokens(Vec<i64>),
    /// Raw pixels `[channels, height, width]`, passed through unchanged (pixel modalities).
    Pixels(Vec<f32>),
}

impl MaskedTensor {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::Tokens(t) => t.len(),
            Self::Pixels(p) => p.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token ids (empty for pixels).
    pub fn tokens(&self) -> &[i64] {
        match self {
            Self::Tokens(t) => t,
            Self::Pixels(_) => &[],
        }
    }
}

/// One modality of one masked sample (one row of a batch).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedModality {
    /// Token ids or pixels.
    pub tensor: MaskedTensor,
    /// True = not an encoder input.
    pub input_mask: Vec<bool>,
    /// True = not a decoder target.
    pub target_mask: Vec<bool>,
    /// Compressed decoder attention mask: images carry the number of targets at the first
    /// target position (0 elsewhere); sequences carry 1 at every target position.
    pub decoder_attention_mask: Vec<i32>,
}

impl MaskedModality {
    /// A modality that is neither input nor target (ml-4m's `make_empty_mod_dict`, used when a
    /// dataset lacks a modality): zero tokens, every mask set.
    pub fn empty(len: usize) -> Self {
        Self {
            tensor: MaskedTensor::Tokens(vec![0; len]),
            input_mask: vec![true; len],
            target_mask: vec![true; len],
            decoder_attention_mask: vec![0; len],
        }
    }

    /// Mask length (tokens of the grid or of the sequence layout).
    pub fn len(&self) -> usize {
        self.input_mask.len()
    }

    /// Whether the masks are empty.
    pub fn is_empty(&self) -> bool {
        self.input_mask.is_empty()
    }

    /// Number of encoder inputs.
    pub fn num_inputs(&self) -> usize {
        self.input_mask.iter().filter(|m| !**m).count()
    }

    /// Number of decoder targets.
    pub fn num_targets(&self) -> usize {
        self.target_mask.iter().filter(|m| !**m).count()
    }
}

/// The token budget one modality of a sample was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Input tokens allowed.
    pub input: usize,
    /// Target tokens allowed (`None`: no target range, targets are the complement of inputs).
    pub target: Option<usize>,
}

/// One masked sample: its modalities in sorted-name order (the order ml-4m's loader emits and
/// its encoder concatenates in).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedSample {
    /// The mixture component the budgets were drawn from.
    pub component: usize,
    /// Modality name → masked data.
    pub modalities: BTreeMap<String, MaskedModality>,
    /// Modality name → budget it was given.
    pub budgets: BTreeMap<String, Budget>,
}

/// Masked samples stacked row by row: per modality `[batch, len]` row-major, the layout
/// `fourm_model::ModalityBatch` takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaskedBatch {
    /// Samples.
    pub batch_size: usize,
    /// Modality name → stacked rows.
    pub modalities: BTreeMap<String, MaskedModality>,
}

impl MaskedBatch {
    /// Stacks samples that have the same modalities with the same lengths (what one masker
    /// produces); `None` when they do not.
    pub fn collate(samples: &[MaskedSample]) -> Option<Self> {
        let first = samples.first()?;
        let mut modalities = BTreeMap::new();
        for (name, m) in &first.modalities {
            let mut rows = MaskedModality {
                tensor: match &m.tensor {
                    MaskedTensor::Tokens(_) => MaskedTensor::Tokens(Vec::new()),
                    MaskedTensor::Pixels(_) => MaskedTensor::Pixels(Vec::new()),
                },
                input_mask: Vec::new(),
                target_mask: Vec::new(),
                decoder_attention_mask: Vec::new(),
            };
            for s in samples {
                let row = s.modalities.get(name)?;
                if row.len() != m.len() || row.tensor.len() != m.tensor.len() {
                    return None;
                }
                match (&mut rows.tensor, &row.tensor) {
                    (MaskedTensor::Tokens(all), MaskedTensor::Tokens(t)) => all.extend(t),
                    (MaskedTensor::Pixels(all), MaskedTensor::Pixels(p)) => all.extend(p),
                    _ => return None,
                }
                rows.input_mask.extend(&row.input_mask);
                rows.target_mask.extend(&row.target_mask);
                rows.decoder_attention_mask
                    .extend(&row.decoder_attention_mask);
            }
            modalities.insert(name.clone(), rows);
        }
        if samples
            .iter()
            .any(|s| s.modalities.len() != first.modalities.len())
        {
            return None;
        }
        Some(Self {
            batch_size: samples.len(),
            modalities,
        })
    }
}
