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

mod assignment;
mod cursor;
mod error;
pub mod fixtures;
mod index;
mod inspect;
mod layout;
mod loader;
pub mod moto;
pub mod npy;
mod plan;
mod reader;
mod scan;
mod seed;
mod shard;
mod store;
mod stream;
mod tarball;

pub use assignment::Assignment;
pub use cursor::Cursor;
pub use error::{DataError, PlanError};
pub use index::{DatasetIndex, INDEX_FORMAT_VERSION, ModalityInfo, ModalityKind, ShardInfo};
pub use inspect::{InspectReport, ModalityStats, inspect};
pub use layout::{
    CROP_SETTINGS, INDEX_FILE, index_path, parse_shard_name, shard_path, split_entry_name,
};
pub use loader::{LoaderConfig, Step, StepLoader, StepSample};
pub use plan::{Entry, EpochPlan, ShardSize};
pub use reader::{RawShard, ShardReader, read_index, sha256_hex, write_index};
pub use scan::{ScanOptions, ScanOutcome, known_vocab_size, scan_dataset};
pub use seed::{derive_seed, permutation, rng_for};
pub use shard::{DecodedSample, ModalityData, ModalityTar, ShardData, TokenGrid, validate_shard};
pub use store::{DatasetStore, StoreConfig};
pub use stream::{RankEntries, RankStream, SampleRef};
pub use tarball::{TarEntry, read_tar, write_tar};
