//! # fourm-data
//!
//! fourm's data plane. This crate never depends on burn: it yields plain token arrays.
//!
//! - [`EpochPlan`], [`Assignment`], [`RankStream`] and [`Cursor`]: which sample every rank reads at
//!   every step, and the exactly-once record of what committed steps consumed.
//! - The ml-4m pre-tokenized layout (`<root>/<modality>/shard-NNNNN.tar` of `<key>.npy|txt|json`):
//!   [`npy`], [`read_tar`]/[`write_tar`], the dataset index [`DatasetIndex`] built by
//!   [`scan_dataset`], and validation ([`validate_shard`]).
//! - Storage: [`DatasetStore`] (object_store from a URL, retries, timeouts), [`ShardReader`]
//!   (whole shards, checked against the index) and [`StepLoader`] (a rank's steps as
//!   [`DecodedSample`]s, with bounded read-ahead).
//! - [`inspect()`] for the dataset tools; [`fixtures`] and [`moto`] for tests and benchmarks.
//! - [`AlphasConfig`], [`MaskingConfig`] and [`Masker`]: ml-4m's masking of a sample into the
//!   per-modality `tensor` / `input_mask` / `target_mask` / `decoder_attention_mask`.
//! - [`TextTokenizer`] (ml-4m's WordPiece layout, load or train) and [`Detections`] (boxes as
//!   text); [`PatchTokenizer`], the patch vector quantiser of image-like modalities.
//! - [`synth`]: the synthetic aligned dataset (ray-cast scenes → RGB, depth, normals,
//!   segmentation, boxes, caption), written in the ml-4m layout.

mod alphas;
mod assignment;
mod budget;
mod cursor;
mod det;
mod error;
pub mod fixtures;
mod image_tokenizer;
mod index;
mod inspect;
mod kmeans;
mod layout;
mod loader;
mod masked;
mod masking;
mod masking_config;
mod masking_input;
pub mod moto;
pub mod npy;
mod plan;
mod raster;
mod reader;
mod scan;
mod seed;
mod shard;
mod span;
mod store;
mod stream;
pub mod synth;
mod tarball;
mod text_tokenizer;

pub use alphas::{AlphasConfig, KeepScheme, ModalityAlphas};
pub use assignment::Assignment;
pub use budget::{Dirichlet, split_budget};
pub use cursor::Cursor;
pub use det::{COORD_BINS, DET_THRESHOLD, DetInstance, Detections};
pub use error::{DataError, MaskError, PlanError, SynthError, TokenizerError};
pub use image_tokenizer::{FitOptions, ImagePlane, PatchTokenizer, PixelCodec};
pub use index::{DatasetIndex, INDEX_FORMAT_VERSION, ModalityInfo, ModalityKind, ShardInfo};
pub use inspect::{InspectReport, ModalityStats, inspect};
pub use layout::{
    CROP_SETTINGS, INDEX_FILE, index_path, parse_shard_name, shard_path, split_entry_name,
};
pub use loader::{LoaderConfig, Step, StepLoader, StepSample};
pub use masked::{Budget, MaskedBatch, MaskedModality, MaskedSample, MaskedTensor};
pub use masking::{MASKING_STREAM, Masker, ModalityInput};
pub use masking_config::{MaskKind, MaskingConfig, ModalityMasking, Role, TokenRange};
pub use masking_input::masking_input;
pub use plan::{Entry, EpochPlan, ShardSize};
pub use raster::{RawFormat, from_png, to_png};
pub use reader::{RawShard, ShardReader, read_index, sha256_hex, write_index};
pub use scan::{ScanOptions, ScanOutcome, known_vocab_size, scan_dataset};
pub use seed::{derive_seed, permutation, rng_for};
pub use shard::{DecodedSample, ModalityData, ModalityTar, ShardData, TokenGrid, validate_shard};
pub use span::{SequenceTokens, mask_sequence, span_mask};
pub use store::{DatasetStore, StoreConfig};
pub use stream::{RankEntries, RankStream, SampleRef};
pub use tarball::{TarEntry, read_tar, write_tar};
pub use text_tokenizer::{TextTokenizer, TextTokenizerOptions};
