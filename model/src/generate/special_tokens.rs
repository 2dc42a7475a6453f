//! The special ids of the text vocabulary that generation needs: padding, `[EOS]` and the span
//! sentinels `[S_k]` (ml-4m's `get_sentinel_to_id_mapping`).

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Special token ids of the sequence vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialTokens {
    /// `[PAD]`.
    pub pad: i64,
    /// `[EOS]`, appended to conditioning text.
    pub eos: i64,
    /// `sentinels[k]` is the id of `[S_k]`.
    pub sentinels: Vec<i64>,
}

impl SpecialTokens {
    /// The layout of ml-4m's 30k WordPiece tokenizer: `[PAD]=0`, `[EOS]=3`, `[S_0..S_199]=4..203`.
    pub fn ml4m_wordpiece() -> Self {
        Self {
            pad: 0,
            eos: 3,
            sentinels: (4..204).collect(),
        }
    }

    /// The id of `[S_k]`.
    pub fn sentinel(&self, k: usize) -> Result<i64, ModelError> {
        self.sentinels.get(k).copied().ok_or_else(|| {
            ModelError::generation(
                "*",
                format!(
                    "the vocabulary has {} sentinels, [S_{k}] is needed",
                    self.sentinels.len()
                ),
            )
        })
    }

    /// Whether `id` is one of the sentinels.
    pub fn is_sentinel(&self, id: i64) -> bool {
        self.sentinels.contains(&id)
    }

    /// The text of a generated sequence: up to its `[EOS]`, without sentinels and padding.
    pub fn text_part(&self, ids: &[i64]) -> Vec<i64> {
        ids.iter()
            .copied()
            .take_while(|&i| i != self.eos)
            .filter(|&i| i != self.pad && !self.is_sentinel(i))
            .collect()
    }
}

impl Default for SpecialTokens {
    fn default() -> Self {
        Self::ml4m_wordpiece()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wordpiece_layout() {
        let s = SpecialTokens::ml4m_wordpiece();
        assert_eq!(s.sentinel(1).unwrap(), 5);
        assert_eq!(s.sentinel(199).unwrap(), 203);
        assert!(s.sentinel(200).is_err());
        assert!(s.is_sentinel(4) && !s.is_sentinel(3) && !s.is_sentinel(204));
    }
}
