//! The masking config: which modalities a sample has, how each is masked (image grid or span-
//! masked sequence, its size, whether it may be an input, a target or both), and how many input
//! and target tokens a sample gets (ml-4m's `modality_info` and token ranges).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::MaskError;

/// An inclusive range of token counts; ml-4m accepts an int or a `[min, max]` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RangeRepr", into = "RangeRepr")]
pub struct TokenRange {
    /// Smallest count.
    pub min: usize,
    /// Largest count.
    pub max: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RangeRepr {
    One(usize),
    Pair([usize; 2]),
}

impl From<RangeRepr> for TokenRange {
    fn from(r: RangeRepr) -> Self {
        match r {
            RangeRepr::One(n) => Self { min: n, max: n },
            RangeRepr::Pair([min, max]) => Self { min, max },
        }
    }
}

impl From<TokenRange> for RangeRepr {
    fn from(r: TokenRange) -> Self {
        Self::Pair([r.min, r.max])
    }
}

impl TokenRange {
    /// A fixed count.
    pub fn fixed(n: usize) -> Self {
        Self { min: n, max: n }
    }
}

/// How a modality is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// A token grid (or pixel patches) of `max_tokens` positions (ml-4m `img`).
    #[serde(alias = "img")]
    Image,
    /// A token sequence, span-masked, laid out in `2·(max_tokens+1)` (ml-4m `seq`).
    #[serde(alias = "seq")]
    Sequence,
}

/// Whether a modality may be an input, a target, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Input and target (subject to its alphas).
    #[default]
    Both,
    /// Never a target (e.g. raw pixels `rgb@224`), whatever its target alphas say.
    Input,
    /// Never an input, whatever its input alphas say.
    Target,
}

/// One modality of the masking config (ml-4m's `modality_info` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityMasking {
    /// Image-like or sequence.
    pub kind: MaskKind,
    /// Grid size, or the most tokens a sequence keeps.
    pub max_tokens: usize,
    /// Fewest tokens the budget may give it (ml-4m: always 0).
    #[serde(default)]
    pub min_tokens: usize,
    /// Input, target or both.
    #[serde(default)]
    pub role: Role,
}

/// The masking config: modalities and token ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Modality name → how it is masked.
    pub modalities: BTreeMap<String, ModalityMasking>,
    /// Input tokens per sample (ml-4m `[min_input_tokens, num_input_tokens]`).
    pub input_tokens: TokenRange,
    /// Target tokens per sample; absent: image targets are every non-input position and
    /// sequence targets are not truncated.
    #[serde(default)]
    pub target_tokens: Option<TokenRange>,
    /// Budget draws before giving up on `min_tokens` (ml-4m: 100).
    #[serde(default = "default_max_tries")]
    pub max_tries: u32,
}

fn default_max_tries() -> u32 {
    100
}

impl MaskingConfig {
    /// Checks ranges and sizes.
    pub fn validate(&self) -> Result<(), MaskError> {
        let bad = |modality: &str, reason: String| MaskError::Config {
            modality: modality.to_string(),
            reason,
        };
        if self.modalities.is_empty() {
            return Err(bad("*", "no modality".into()));
        }
        for (name, range) in [
            ("input_tokens", Some(self.input_tokens)),
            ("target_tokens", self.target_tokens),
        ] {
            if let Some(r) = range
                && r.min > r.max
            {
                return Err(bad("*", format!("{name}: min {} > max {}", r.min, r.max)));
            }
        }
        for (name, m) in &self.modalities {
            if m.min_tokens > m.max_tokens {
                return Err(bad(
                    name,
                    format!("min_tokens {} > max_tokens {}", m.min_tokens, m.max_tokens),
                ));
            }
            if m.role != Role::Both && m.min_tokens > 0 {
                return Err(bad(
                    name,
                    "min_tokens must be 0 for an input- or target-only modality".into(),
                ));
            }
        }
        Ok(())
    }
}
