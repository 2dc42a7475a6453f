//! The data crate's error type.

/// Errors of the storage side: object stores, shard files, the dataset index and validation.
///
/// Every variant names the object (`url`) and, where there is one, the tar entry it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A URL that names no supported object store.
    #[error("{url}: cannot open the object store")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: object_store::Error,
    },
    /// A request failed for good (after retries where the error was transient).
    #[error("{url}: request failed after {attempts} attempt(s)")]
    Store {
        /// Object URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: object_store::Error,
    },
    /// A request did not finish within the per-request timeout (after retries).
    #[error("{url}: request timed out after {attempts} attempt(s) of {timeout_ms} ms each")]
    Timeout {
        /// Object URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Per-request timeout.
        timeout_ms: u64,
    },
    /// The object's size differs from the size the index records (a truncated or replaced shard).
    #[error("{url}: {found} bytes, the index records {expected} (truncated or replaced shard)")]
    SizeMismatch {
        /// Object URL.
        url: String,
        /// Size in the index.
        expected: u64,
        /// Size read.
        found: u64,
    },
    /// The object's SHA-256 differs from the index's checksum.
    #[error("{url}: sha256 {found}, the index records {expected}")]
    ChecksumMismatch {
        /// Object URL.
        url: String,
        /// Checksum in the index.
        expected: String,
        /// Checksum of the bytes read.
        found: String,
    },
    /// The tar archive cannot be read (truncated, corrupt header).
    #[error("{url}: bad tar archive (after entry {after:?})")]
    Tar {
        /// Object URL.
        url: String,
        /// The last entry read successfully, if any.
        after: Option<String>,
        /// What the tar reader said.
        #[source]
        source: std::io::Error,
    },
    /// A tar entry whose name is not `<key>.<ext>`, or an entry type other than a file.
    #[error("{url}: entry {entry}: {reason}")]
    BadEntry {
        /// Object URL.
        url: String,
        /// Entry name.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A `.npy` entry that is not a valid numpy array file.
    #[error("{url}: entry {entry}: bad .npy file")]
    Npy {
        /// Object URL.
        url: String,
        /// Entry name.
        entry: String,
        /// What is wrong.
        #[source]
        source: crate::npy::NpyError,
    },
    /// The keys of a shard differ between two modalities (missing, extra or out-of-order keys).
    #[error("{url}: sample {position}: key {found:?} where modality {reference} has {expected:?}")]
    KeyMismatch {
        /// Object URL of the modality that disagrees.
        url: String,
        /// Index of the sample in tar order.
        position: u64,
        /// The reference modality (the one with the most entries; ties: the first by name).
        reference: String,
        /// Key in the reference modality (`None`: it has fewer samples).
        expected: Option<String>,
        /// Key in this modality (`None`: it has fewer samples).
        found: Option<String>,
    },
    /// An array whose dtype or shape is not the one the index records.
    #[error("{url}: entry {entry}: {reason}")]
    Shape {
        /// Object URL.
        url: String,
        /// Entry name.
        entry: String,
        /// Expected and found.
        reason: String,
    },
    /// A token id outside `0..vocab_size`.
    #[error(
        "{url}: entry {entry}: token id {id} at position {position} is outside 0..{vocab_size}"
    )]
    TokenOutOfRange {
        /// Object URL.
        url: String,
        /// Entry name.
        entry: String,
        /// The offending id.
        id: i64,
        /// Its flat position in the array.
        position: usize,
        /// The modality's vocabulary size.
        vocab_size: u32,
    },
    /// A text entry that is not UTF-8, or a `.json` entry that does not parse.
    #[error("{url}: entry {entry}: {reason}")]
    Text {
        /// Object URL.
        url: String,
        /// Entry name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The shard holds a different number of samples than the index says.
    #[error("{url}: {found} samples, the index records {expected}")]
    SampleCount {
        /// Object URL.
        url: String,
        /// Count in the index.
        expected: u64,
        /// Count read.
        found: u64,
    },
    /// `index.json` cannot be parsed.
    #[error("{url}: cannot parse the dataset index")]
    IndexParse {
        /// URL of `index.json`.
        url: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The dataset index (or the dataset it is built from) is inconsistent.
    #[error("{url}: invalid dataset index: {reason}")]
    IndexInvalid {
        /// URL of `index.json` or of the dataset root.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A modality lacks a shard that other modalities have.
    #[error("{url}: missing (modality {modality} lacks a shard the other modalities have)")]
    Missing {
        /// URL of the missing object.
        url: String,
        /// The modality.
        modality: String,
    },
    /// A shard number that the index does not list.
    #[error("{url}: shard {shard} is not in the dataset index")]
    UnknownShard {
        /// Dataset root URL.
        url: String,
        /// The shard.
        shard: u32,
    },
    /// A reader configuration value out of range.
    #[error("invalid reader configuration: {key}: {reason}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A background task died (a bug, reported instead of propagated as a panic).
    #[error("shard {shard}: background read task failed")]
    Task {
        /// The shard being read.
        shard: u32,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl DataError {
    /// Whether the error says nothing about the data itself (the store failed, timed out, a task
    /// died): reading again later may succeed, so the data must not be skipped.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { source, .. } => crate::store::is_transient(source),
            Self::Timeout { .. } | Self::Task { .. } => true,
            _ => false,
        }
    }

    /// The URL of the object (or dataset) the error concerns, where there is one.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::BadUrl { url, .. }
            | Self::Store { url, .. }
            | Self::Timeout { url, .. }
            | Self::SizeMismatch { url, .. }
            | Self::ChecksumMismatch { url, .. }
            | Self::Tar { url, .. }
            | Self::BadEntry { url, .. }
            | Self::Npy { url, .. }
            | Self::KeyMismatch { url, .. }
            | Self::Shape { url, .. }
            | Self::TokenOutOfRange { url, .. }
            | Self::Text { url, .. }
            | Self::SampleCount { url, .. }
            | Self::IndexParse { url, .. }
            | Self::IndexInvalid { url, .. }
            | Self::Missing { url, .. }
            | Self::UnknownShard { url, .. } => Some(url),
            Self::Config { .. } | Self::Task { .. } => None,
        }
    }
}
