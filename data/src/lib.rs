//! # fourm-data
//!
//! fourm's data plane. This crate never depends on burn: it yields plain token arrays.
//!
//! - [`EpochPlan`], [`Assignment`], [`RankStream`] and [`Cursor`]: which sample every rank reads at
//!   every step, and the exactly-once record of what committed steps consumed.
//! - [`AlphasConfig`], [`MaskingConfig`] and [`Masker`]: ml-4m's masking of a sample into the
//!   per-modality `tensor` / `input_mask` / `target_mask` / `decoder_attention_mask`.
//! - [`TextTokenizer`] (ml-4m's WordPiece layout, load or train) and [`Detections`] (boxes as
//!   text).

mod alphas;
mod assignment;
mod budget;
mod cursor;
mod det;
mod error;
mod masked;
mod masking;
mod plan;
mod seed;
mod span;
mod stream;
mod text_tokenizer;

pub use alphas::{AlphasConfig, KeepScheme, ModalityAlphas};
pub use assignment::Assignment;
pub use budget::{Dirichlet, split_budget};
pub use cursor::Cursor;
pub use det::{COORD_BINS, DET_THRESHOLD, DetInstance, Detections};
pub use error::{MaskError, PlanError, TokenizerError};
pub use masked::{Budget, MaskedBatch, MaskedModality, MaskedSample, MaskedTensor};
pub use masking::{
    MASKING_STREAM, MaskKind, Masker, MaskingConfig, ModalityInput, ModalityMasking, Role,
    TokenRange,
};
pub use plan::{Entry, EpochPlan, ShardSize};
pub use seed::{derive_seed, permutation, rng_for};
pub use span::{SequenceTokens, mask_sequence, span_mask};
pub use stream::{RankEntries, RankStream, SampleRef};
pub use text_tokenizer::{TextTokenizer, TextTokenizerOptions};
