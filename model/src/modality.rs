//! The modality registry: which modalities a model reads and predicts, and their shapes.
//!
//! A 4M model has one encoder embedding per modality and one decoder embedding per modality that
//! can be a target. Modalities are always handled in sorted-name order (ml-4m's data loader emits
//! them that way), and each has a 15-bit id derived from its name, as ml-4m's
//! `generate_uint15_hash`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::SEQ_POS_EMB_ROWS;
use crate::error::ModelError;

/// How a modality is represented and embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModalityKind {
    /// Discrete tokens on a `rows × cols` grid (`tok_rgb@224`, `tok_depth@224`, ...), row-major.
    ImageTokens {
        /// Grid size `[rows, cols]`.
        grid: [usize; 2],
    },
    /// Raw pixels cut into `patch_size²` patches, encoder input only (`rgb@224`).
    ImagePixels {
        /// Patch grid `[rows, cols]`.
        grid: [usize; 2],
        /// Side of a square patch in pixels.
        patch_size: usize,
        /// Image channels.
        channels: usize,
    },
    /// A token sequence (`caption`, `det`, ...), span-masked with sentinels.
    Sequence {
        /// Positions addressable by the decoder's position embedding (`max_length`).
        max_length: usize,
    },
}

/// One modality of a 4M model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalitySpec {
    /// Name, as used in ml-4m (`tok_rgb@224`, `caption`, ...).
    pub name: String,
    /// Representation.
    pub kind: ModalityKind,
    /// Token vocabulary size (0 for pixel modalities).
    #[serde(default)]
    pub vocab_size: usize,
    /// Maximum number of tokens masking may give this modality (grid size for images,
    /// ml-4m's `max_tokens` for sequences).
    pub max_tokens: usize,
    /// Encoder input only: the modality has no decoder embedding and is never a target.
    #[serde(default)]
    pub input_only: bool,
}

impl ModalitySpec {
    /// A pre-tokenized image-like modality on a `rows × cols` grid.
    pub fn image_tokens(name: &str, vocab_size: usize, grid: [usize; 2]) -> Self {
        Self {
            name: name.to_string(),
            kind: ModalityKind::ImageTokens { grid },
            vocab_size,
            max_tokens: grid[0] * grid[1],
            input_only: false,
        }
    }

    /// A raw-pixel input modality (`image_size / patch_size` patches per side).
    pub fn image_pixels(name: &str, image_size: usize, patch_size: usize, channels: usize) -> Self {
        let side = image_size / patch_size.max(1);
        Self {
            name: name.to_string(),
            kind: ModalityKind::ImagePixels {
                grid: [side, side],
                patch_size,
                channels,
            },
            vocab_size: 0,
            max_tokens: side * side,
            input_only: true,
        }
    }

    /// A token sequence whose masking budget and embedding length are both `max_length`.
    pub fn sequence(name: &str, vocab_size: usize, max_length: usize) -> Self {
        Self {
            name: name.to_string(),
            kind: ModalityKind::Sequence { max_length },
            vocab_size,
            max_tokens: max_length,
            input_only: false,
        }
    }

    /// The modality id ml-4m puts in its modality masks: SHA-256 of the name, modulo 2¹⁵.
    pub fn id(&self) -> i64 {
        modality_id(&self.name)
    }

    /// Whether the modality is a token sequence.
    pub fn is_sequence(&self) -> bool {
        matches!(self.kind, ModalityKind::Sequence { .. })
    }

    /// Length of the per-sample `tensor` / mask rows the model expects: the grid size for
    /// image-like modalities, `2·(max_tokens + 1)` for sequences (ml-4m's span-masking layout).
    pub fn tensor_len(&self) -> usize {
        match self.kind {
            ModalityKind::ImageTokens { grid } | ModalityKind::ImagePixels { grid, .. } => {
                grid[0] * grid[1]
            }
            ModalityKind::Sequence { .. } => 2 * (self.max_tokens + 1),
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| {
            Err(ModelError::Config(format!(
                "modality `{}`: {reason}",
                self.name
            )))
        };
        if self.name.is_empty() {
            return bad("empty name".into());
        }
        match self.kind {
            ModalityKind::ImageTokens { grid } => {
                if grid[0] == 0 || grid[1] == 0 {
                    return bad(format!("empty grid {grid:?}"));
                }
                if self.max_tokens != grid[0] * grid[1] {
                    return bad(format!(
                        "max_tokens {} differs from the grid size",
                        self.max_tokens
                    ));
                }
            }
            ModalityKind::ImagePixels {
                grid,
                patch_size,
                channels,
            } => {
                if grid[0] == 0 || grid[1] == 0 || patch_size == 0 || channels == 0 {
                    return bad("empty grid, patch or channel count".into());
                }
                if !self.input_only {
                    return bad("pixel modalities are input-only".into());
                }
            }
            ModalityKind::Sequence { max_length } => {
                if max_length == 0 || max_length > SEQ_POS_EMB_ROWS {
                    return bad(format!(
                        "max_length {max_length} outside 1..={SEQ_POS_EMB_ROWS}"
                    ));
                }
                if self.max_tokens == 0 || self.max_tokens > SEQ_POS_EMB_ROWS {
                    return bad(format!(
                        "max_tokens {} outside 1..={SEQ_POS_EMB_ROWS}",
                        self.max_tokens
                    ));
                }
            }
        }
        if !matches!(self.kind, ModalityKind::ImagePixels { .. }) && self.vocab_size == 0 {
            return bad("token modalities need a vocabulary".into());
        }
        Ok(())
    }
}

/// `generate_uint15_hash(name)` of ml-4m (`fourm/utils/misc.py`).
pub fn modality_id(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    // The digest read as a big-endian integer, modulo 2^15: the low 15 bits of the last 2 bytes.
    let low = u16::from_be_bytes([digest[30], digest[31]]);
    i64::from(low & 0x7fff)
}

/// The modalities of a model, kept sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<ModalitySpec>", into = "Vec<ModalitySpec>")]
pub struct Modalities(Vec<ModalitySpec>);

impl TryFrom<Vec<ModalitySpec>> for Modalities {
    type Error = ModelError;

    fn try_from(specs: Vec<ModalitySpec>) -> Result<Self, ModelError> {
        Self::new(specs)
    }
}

impl From<Modalities> for Vec<ModalitySpec> {
    fn from(m: Modalities) -> Self {
        m.0
    }
}

impl Modalities {
    /// Builds and validates a registry (names unique, ids distinct, shapes sane).
    pub fn new(mut specs: Vec<ModalitySpec>) -> Result<Self, ModelError> {
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        if specs.is_empty() {
            return Err(ModelError::Config(
                "a model needs at least one modality".into(),
            ));
        }
        for spec in &specs {
            spec.validate()?;
        }
        for pair in specs.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(ModelError::Config(format!(
                    "modality `{}` listed twice",
                    pair[0].name
                )));
            }
        }
        for (i, a) in specs.iter().enumerate() {
            if let Some(b) = specs[i + 1..].iter().find(|b| b.id() == a.id()) {
                return Err(ModelError::Config(format!(
                    "modalities `{}` and `{}` share the id {}",
                    a.name,
                    b.name,
                    a.id()
                )));
            }
        }
        if specs.iter().all(|s| s.input_only) {
            return Err(ModelError::Config(
                "no modality can be a decoder target".into(),
            ));
        }
        Ok(Self(specs))
    }

    /// ml-4m's 4M-7 set at 224 px: `rgb@224` pixels (input only), five tokenized image
    /// modalities on 14×14 grids, and `caption` / `det` with the 30k WordPiece vocabulary.
    pub fn mod7_224() -> Self {
        let grid = [14, 14];
        Self::new(vec![
            ModalitySpec::image_pixels("rgb@224", 224, 16, 3),
            ModalitySpec::image_tokens("tok_rgb@224", 16384, grid),
            ModalitySpec::image_tokens("tok_depth@224", 8192, grid),
            ModalitySpec::image_tokens("tok_semseg@224", 4096, grid),
            ModalitySpec::image_tokens("tok_normal@224", 8192, grid),
            ModalitySpec::image_tokens("tok_clip@224", 8192, grid),
            ModalitySpec::sequence("caption", 30_000, 256),
            ModalitySpec::sequence("det", 30_000, 256),
        ])
        .expect("the 4M-7 registry is valid")
    }

    /// The benchmark set of the spec (§9): three 16×16 token modalities with 1024 codes and a
    /// 32-token caption with 1000 words.
    pub fn perf() -> Self {
        let grid = [16, 16];
        Self::new(vec![
            ModalitySpec::image_tokens("tok_rgb", 1024, grid),
            ModalitySpec::image_tokens("tok_depth", 1024, grid),
            ModalitySpec::image_tokens("tok_normal", 1024, grid),
            ModalitySpec::sequence("caption", 1000, 32),
        ])
        .expect("the perf registry is valid")
    }

    /// All modalities, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &ModalitySpec> {
        self.0.iter()
    }

    /// Modalities that have a decoder embedding (can be targets), sorted by name.
    pub fn targets(&self) -> impl Iterator<Item = &ModalitySpec> {
        self.0.iter().filter(|s| !s.input_only)
    }

    /// Looks a modality up by name.
    pub fn get(&self, name: &str) -> Option<&ModalitySpec> {
        self.0.iter().find(|s| s.name == name)
    }

    /// Position of a modality in sorted order.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|s| s.name == name)
    }

    /// Number of modalities.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a registry has at least one modality.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_ml4m_hash() {
        // Values from the parity fixture's config (computed by ml-4m).
        assert_eq!(modality_id("caption"), 32652);
        assert_eq!(modality_id("tok_depth@64"), 11245);
        assert_eq!(modality_id("tok_rgb@128"), 20212);
    }

    #[test]
    fn registry_is_sorted_and_checked() {
        let m = Modalities::mod7_224();
        let names: Vec<_> = m.iter().map(|s| s.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(m.targets().count(), 7);
        assert_eq!(m.get("caption").unwrap().tensor_len(), 514);
        let dup = Modalities::new(vec![
            ModalitySpec::sequence("caption", 10, 8),
            ModalitySpec::sequence("caption", 10, 8),
        ]);
        assert!(dup.is_err());
        let too_long = Modalities::new(vec![ModalitySpec::sequence("caption", 10, 600)]);
        assert!(too_long.is_err());
        let no_vocab = Modalities::new(vec![ModalitySpec::image_tokens("tok", 0, [2, 2])]);
        assert!(no_vocab.is_err());
    }

    #[test]
    fn specs_round_trip_through_toml_like_serde() {
        let m = Modalities::perf();
        let json = serde_json::to_string(&m).unwrap();
        let back: Modalities = serde_json::from_str(&json).unwrap();
        assert_eq!(m, back);
    }
}
