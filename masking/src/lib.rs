//! # fourm-masking
//!
//! ml-4m's masking of a sample, and the text side of tokenization. Plain token arrays in, plain
//! token arrays out: no burn, no storage.
//!
//! - [`AlphasConfig`] (ml-4m's alphas mixtures, YAML or TOML), [`MaskingConfig`] and [`Masker`]:
//!   a sample becomes the per-modality `tensor` / `input_mask` / `target_mask` /
//!   `decoder_attention_mask` that ml-4m's `UnifiedMasking` produces, seeded per sample.
//! - [`split_budget`] and [`Dirichlet`]: the token budgets; [`span_mask`] and [`mask_sequence`]:
//!   T5-style span masking of sequences with sentinels.
//! - [`TextTokenizer`] (ml-4m's WordPiece layout, load or train) and [`Detections`] (boxes as
//!   text).
//! - [`masking_input`]: a decoded sample of `fourm-data` as the masker's input.

mod alphas;
mod budget;
mod det;
mod error;
mod masked;
mod masking;
mod masking_config;
mod masking_input;
mod span;
mod text_tokenizer;

pub use alphas::{AlphasConfig, KeepScheme, ModalityAlphas};
pub use budget::{Dirichlet, split_budget};
pub use det::{COORD_BINS, DET_THRESHOLD, DetInstance, Detections};
pub use error::MaskError;
pub use masked::{Budget, MaskedBatch, MaskedModality, MaskedSample, MaskedTensor};
pub use masking::{MASKING_STREAM, Masker, ModalityInput};
pub use masking_config::{MaskKind, MaskingConfig, ModalityMasking, Role, TokenRange};
pub use masking_input::masking_input;
pub use span::{SequenceTokens, mask_sequence, span_mask};
pub use text_tokenizer::{TextTokenizer, TextTokenizerOptions};
