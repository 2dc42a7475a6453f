//! The generation state: ml-4m's `mod_dict` during generation. Every modality holds its token
//! ids (or pixels) with an input mask (false = an encoder input) and a target mask (false = still
//! to be generated). Conditions are fully visible; targets start empty and fill up step by step,
//! each generated token becoming an input of the following steps.

use std::collections::BTreeMap;

use crate::batch::ModalityData;
use crate::error::ModelError;
use crate::generate::special_tokens::SpecialTokens;
use crate::modality::{Modalities, ModalityKind, ModalitySpec};

/// One modality of a [`GenState`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityState {
    /// Token ids `[batch, len]`, or pixels `[batch, c, h, w]` for pixel modalities.
    pub data: ModalityData,
    /// Positions per sample: the grid size for images, any length for sequences.
    pub len: usize,
    /// `[batch, len]`: true = not an encoder input.
    pub input_mask: Vec<bool>,
    /// `[batch, len]`: true = not (or no longer) to be generated.
    pub target_mask: Vec<bool>,
}

impl ModalityState {
    /// Token ids (empty for pixels).
    pub fn ids(&self) -> &[i64] {
        match &self.data {
            ModalityData::Tokens(ids) => ids,
            ModalityData::Pixels(_) => &[],
        }
    }

    /// Positions of sample `b` still to be generated, ascending.
    pub fn remaining(&self, b: usize) -> Vec<usize> {
        let row = &self.target_mask[b * self.len..(b + 1) * self.len];
        (0..self.len).filter(|&p| !row[p]).collect()
    }

    /// The encoder-visible token ids of sample `b`, in order.
    pub fn visible(&self, b: usize) -> Vec<i64> {
        let range = b * self.len..(b + 1) * self.len;
        self.ids()[range.clone()]
            .iter()
            .zip(&self.input_mask[range])
            .filter(|(_, masked)| !**masked)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// What the generator reads and writes: for each modality present, its tokens and masks.
/// Modalities are kept sorted by name (the encoder's concatenation order).
#[derive(Debug, Clone, PartialEq)]
pub struct GenState {
    registry: Modalities,
    batch_size: usize,
    modalities: BTreeMap<String, ModalityState>,
}

impl GenState {
    /// An empty state of `batch_size` samples for a model with `modalities`.
    pub fn new(modalities: &Modalities, batch_size: usize) -> Result<Self, ModelError> {
        if batch_size == 0 {
            return Err(ModelError::generation("*", "batch size 0"));
        }
        Ok(Self {
            registry: modalities.clone(),
            batch_size,
            modalities: BTreeMap::new(),
        })
    }

    /// Samples.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The model's modality registry this state is checked against.
    pub fn registry(&self) -> &Modalities {
        &self.registry
    }

    /// A fully visible image-like condition: token ids `[batch, grid]` (ml-4m
    /// `init_full_input_modality`).
    pub fn with_tokens(self, name: &str, ids: Vec<i64>) -> Result<Self, ModelError> {
        let spec = self.spec(name)?;
        if spec.is_sequence() {
            return Err(ModelError::generation(
                name,
                "a sequence condition is given as rows (with_sequence)",
            ));
        }
        let n = self.batch_size * spec.tensor_len();
        let state = ModalityState {
            data: ModalityData::Tokens(ids),
            len: spec.tensor_len(),
            input_mask: vec![false; n],
            target_mask: vec![true; n],
        };
        self.with_state(name, state)
    }

    /// A fully visible pixel condition, `[batch, c, h, w]`.
    pub fn with_pixels(self, name: &str, pixels: Vec<f32>) -> Result<Self, ModelError> {
        let spec = self.spec(name)?;
        let n = self.batch_size * spec.tensor_len();
        let state = ModalityState {
            data: ModalityData::Pixels(pixels),
            len: spec.tensor_len(),
            input_mask: vec![false; n],
            target_mask: vec![true; n],
        };
        self.with_state(name, state)
    }

    /// A sequence condition, one row of token ids per sample (for example tokenized text). Each
    /// row is visible up to and including its first `[EOS]`; a row without one gets it appended.
    /// Rows are right-padded with `[PAD]`, masked out.
    pub fn with_sequence(
        self,
        name: &str,
        rows: &[Vec<i64>],
        specials: &SpecialTokens,
    ) -> Result<Self, ModelError> {
        self.spec(name)?;
        if rows.len() != self.batch_size {
            return Err(ModelError::generation(
                name,
                format!("{} rows for {} samples", rows.len(), self.batch_size),
            ));
        }
        let rows: Vec<Vec<i64>> = rows
            .iter()
            .map(|row| match row.iter().position(|&t| t == specials.eos) {
                Some(i) => row[..=i].to_vec(),
                None => row.iter().copied().chain([specials.eos]).collect(),
            })
            .collect();
        let state = padded_sequence(&rows, specials.pad);
        self.with_state(name, state)
    }

    /// An empty target (ml-4m `init_empty_target_modality`). Images: every position masked.
    /// Sequences: `[S_1] [S_1] [PAD]… [S_2]` of `len` positions (default the modality's
    /// `max_tokens`, at least 2), only the first `[S_1]` an input, the rest to be generated.
    pub fn with_empty_target(
        self,
        name: &str,
        len: Option<usize>,
        specials: &SpecialTokens,
    ) -> Result<Self, ModelError> {
        let spec = self.spec(name)?;
        if spec.input_only {
            return Err(ModelError::generation(
                name,
                "input-only modality cannot be generated",
            ));
        }
        let b = self.batch_size;
        let state = if spec.is_sequence() {
            let len = len.unwrap_or(spec.max_tokens).max(2);
            let (s1, s2) = (specials.sentinel(1)?, specials.sentinel(2)?);
            let mut ids = vec![specials.pad; b * len];
            let mut input_mask = vec![true; b * len];
            for s in 0..b {
                ids[s * len] = s1;
                ids[s * len + 1] = s1;
                ids[s * len + len - 1] = s2;
                input_mask[s * len] = false;
            }
            let target_mask = input_mask.iter().map(|m| !m).collect();
            ModalityState {
                data: ModalityData::Tokens(ids),
                len,
                input_mask,
                target_mask,
            }
        } else {
            let n = b * spec.tensor_len();
            ModalityState {
                data: ModalityData::Tokens(vec![0; n]),
                len: spec.tensor_len(),
                input_mask: vec![true; n],
                target_mask: vec![false; n],
            }
        };
        self.with_state(name, state)
    }

    /// Adds (or replaces) a modality given with explicit masks, after checking it.
    pub fn with_state(mut self, name: &str, state: ModalityState) -> Result<Self, ModelError> {
        self.check(name, &state)?;
        self.modalities.insert(name.to_string(), state);
        Ok(self)
    }

    /// A modality's state.
    pub fn get(&self, name: &str) -> Option<&ModalityState> {
        self.modalities.get(name)
    }

    /// Token ids `[batch, len]` of a modality.
    pub fn tokens(&self, name: &str) -> Option<&[i64]> {
        self.get(name).map(ModalityState::ids)
    }

    /// The visible tokens of each sample of a modality (a generated caption after merging).
    pub fn sequences(&self, name: &str) -> Option<Vec<Vec<i64>>> {
        let m = self.get(name)?;
        Some((0..self.batch_size).map(|b| m.visible(b)).collect())
    }

    /// Per sample, the positions of `name` still to be generated (ascending); every sample must
    /// have as many (ml-4m decodes the batch in lockstep).
    pub fn remaining_positions(&self, name: &str) -> Result<Vec<Vec<usize>>, ModelError> {
        let m = self
            .get(name)
            .ok_or_else(|| ModelError::generation(name, "not in the generation state"))?;
        let rows: Vec<Vec<usize>> = (0..self.batch_size).map(|b| m.remaining(b)).collect();
        if rows.iter().any(|r| r.len() != rows[0].len()) {
            return Err(ModelError::generation(
                name,
                "samples have different numbers of positions left to generate",
            ));
        }
        Ok(rows)
    }

    /// Modalities present, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModalityState)> {
        self.modalities.iter().map(|(n, m)| (n.as_str(), m))
    }

    /// The registry entry of `name`.
    pub(crate) fn spec(&self, name: &str) -> Result<&ModalitySpec, ModelError> {
        self.registry
            .get(name)
            .ok_or_else(|| ModelError::generation(name, "not a modality of this model"))
    }

    /// Replaces a modality's state without checks (the caller built it from a checked one).
    pub(crate) fn replace(&mut self, name: &str, state: ModalityState) {
        self.modalities.insert(name.to_string(), state);
    }

    /// Writes `token` at `pos` of sample `b`: it becomes an input and stops being a target.
    pub(crate) fn commit(&mut self, name: &str, b: usize, pos: usize, token: i64) {
        let m = self
            .modalities
            .get_mut(name)
            .expect("committed modality exists");
        let i = b * m.len + pos;
        if let ModalityData::Tokens(ids) = &mut m.data {
            ids[i] = token;
        }
        m.input_mask[i] = false;
        m.target_mask[i] = true;
    }

    fn check(&self, name: &str, m: &ModalityState) -> Result<(), ModelError> {
        let spec = self.spec(name)?;
        let bad = |reason: String| Err(ModelError::generation(name, reason));
        let rows = self.batch_size * m.len;
        if m.input_mask.len() != rows || m.target_mask.len() != rows {
            return bad(format!(
                "masks have {} and {} entries, expected {} × {}",
                m.input_mask.len(),
                m.target_mask.len(),
                self.batch_size,
                m.len
            ));
        }
        if !spec.is_sequence() && m.len != spec.tensor_len() {
            return bad(format!(
                "{} positions per sample, the grid has {}",
                m.len,
                spec.tensor_len()
            ));
        }
        if spec.input_only && m.target_mask.iter().any(|&t| !t) {
            return bad("input-only modality has positions to generate".into());
        }
        match (&m.data, spec.kind) {
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
                    return bad(format!("{} pixel values, expected {expected}", px.len()));
                }
                if px.iter().any(|v| !v.is_finite()) {
                    return bad("non-finite pixel value".into());
                }
            }
            (
                ModalityData::Tokens(ids),
                ModalityKind::ImageTokens { .. } | ModalityKind::Sequence { .. },
            ) => {
                if ids.len() != rows {
                    return bad(format!(
                        "{} token ids, expected {} × {}",
                        ids.len(),
                        self.batch_size,
                        m.len
                    ));
                }
                if let Some(id) = ids
                    .iter()
                    .find(|&&id| id < 0 || id as usize >= spec.vocab_size)
                {
                    return bad(format!(
                        "token id {id} outside the vocabulary 0..{}",
                        spec.vocab_size
                    ));
                }
            }
            _ => return bad("data kind does not match the modality kind".into()),
        }
        Ok(())
    }
}

/// Rows right-padded with `pad` into one visible-prefix sequence state (no targets).
pub(crate) fn padded_sequence(rows: &[Vec<i64>], pad: i64) -> ModalityState {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut input_mask = Vec::with_capacity(rows.len() * len);
    for row in rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(pad, len - row.len())),
        );
        input_mask.extend((0..len).map(|p| p >= row.len()));
    }
    ModalityState {
        data: ModalityData::Tokens(ids),
        len,
        input_mask,
        target_mask: vec![true; rows.len() * len],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Modalities {
        Modalities::new(vec![
            ModalitySpec::image_tokens("tok_rgb", 16, [2, 2]),
            ModalitySpec::sequence("caption", 50, 8),
            ModalitySpec::image_pixels("rgb", 4, 2, 3),
        ])
        .unwrap()
    }

    #[test]
    fn conditions_and_targets_have_ml4m_masks() {
        let sp = SpecialTokens::ml4m_wordpiece();
        let s = GenState::new(&registry(), 2)
            .unwrap()
            .with_tokens("tok_rgb", vec![1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap()
            .with_sequence("caption", &[vec![30, 31], vec![32, 3, 33]], &sp)
            .unwrap();
        let cap = s.get("caption").unwrap();
        assert_eq!(cap.len, 3);
        assert_eq!(cap.ids(), &[30, 31, 3, 32, 3, 0]);
        assert_eq!(
            cap.input_mask,
            vec![false, false, false, false, false, true]
        );
        assert_eq!(
            s.sequences("caption").unwrap(),
            vec![vec![30, 31, 3], vec![32, 3]]
        );

        let s = s.with_empty_target("caption", Some(5), &sp).unwrap();
        let cap = s.get("caption").unwrap();
        assert_eq!(&cap.ids()[..5], &[5, 5, 0, 0, 6]);
        assert_eq!(&cap.input_mask[..5], &[false, true, true, true, true]);
        assert_eq!(cap.remaining(1), vec![1, 2, 3, 4]);

        let mut s = s.with_empty_target("tok_rgb", None, &sp).unwrap();
        assert_eq!(s.get("tok_rgb").unwrap().remaining(0), vec![0, 1, 2, 3]);
        s.commit("tok_rgb", 1, 2, 9);
        let rgb = s.get("tok_rgb").unwrap();
        assert_eq!(rgb.remaining(1), vec![0, 1, 3]);
        assert_eq!(rgb.visible(1), vec![9]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let sp = SpecialTokens::ml4m_wordpiece();
        let s = || GenState::new(&registry(), 2).unwrap();
        assert!(GenState::new(&registry(), 0).is_err());
        assert!(s().with_tokens("tok_rgb", vec![0; 7]).is_err());
        assert!(s().with_tokens("tok_rgb", vec![16; 8]).is_err());
        assert!(s().with_tokens("depth", vec![0; 8]).is_err());
        assert!(s().with_tokens("caption", vec![0; 8]).is_err());
        assert!(s().with_sequence("caption", &[vec![1]], &sp).is_err());
        assert!(s().with_empty_target("rgb", None, &sp).is_err());
        assert!(s().with_pixels("rgb", vec![0.0; 2 * 3 * 16]).is_ok());
        assert!(s().with_pixels("rgb", vec![f32::NAN; 2 * 3 * 16]).is_err());
    }
}
