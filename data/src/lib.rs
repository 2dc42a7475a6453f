//! # fourm-data
//!
//! fourm's shard format and storage. This crate never depends on burn (it yields plain token
//! arrays) nor on tokenizers or image codecs (those live in `fourm-masking` and `fourm-synth`), so
//! the coordinator can link it.
//!
//! - The ml-4m pre-tokenized layout (`<root>/<modality>/shard-NNNNN.tar` of `<key>.npy|txt|json`):
//!   [`npy`], [`read_tar`]/[`write_tar`], the dataset index [`DatasetIndex`] built by
//!   [`scan_dataset`], and validation ([`validate_shard`]).
//! - Storage: [`DatasetStore`] (object_store from a URL, retries, timeouts), [`ShardReader`]
//!   (whole shards, checked against the index) and [`StepLoader`] (a rank's steps as
//!   [`DecodedSample`]s, with bounded read-ahead).
//! - [`inspect()`] for the dataset tools.
//! - With the `test-util` feature: `fixtures` (small datasets written on the fly), `moto` (an
//!   S3-compatible server for tests and benchmarks) and `proxy` (a TCP proxy that takes a service
//!   down and back, for outage tests).

mod error;
#[cfg(feature = "test-util")]
pub mod fixtures;
mod index;
mod inspect;
mod layout;
mod loader;
#[cfg(feature = "test-util")]
pub mod moto;
pub mod npy;
#[cfg(feature = "test-util")]
pub mod proxy;
mod reader;
mod scan;
mod shard;
mod store;
mod tarball;

pub use error::DataError;
pub use index::{DatasetIndex, INDEX_FORMAT_VERSION, ModalityInfo, ModalityKind, ShardInfo};
pub use inspect::{InspectReport, ModalityStats, inspect};
pub use layout::{
    CROP_SETTINGS, INDEX_FILE, index_path, parse_shard_name, shard_path, split_entry_name,
};
pub use loader::{LoaderConfig, Step, StepLoader, StepSample};
pub use reader::{RawShard, ShardReader, read_index, sha256_hex, write_index};
pub use scan::{ScanOptions, ScanOutcome, known_vocab_size, scan_dataset};
pub use shard::{DecodedSample, ModalityData, ModalityTar, ShardData, TokenGrid, validate_shard};
pub use store::{DatasetStore, StoreConfig};
pub use tarball::{TarEntry, read_tar, write_tar};
