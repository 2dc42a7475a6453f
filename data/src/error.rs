//! The data crate's error types.

/// Errors of the epoch plan, cursor and assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No shard, or no sample in any shard.
    #[error("the dataset has no samples")]
    Empty,
    /// A shard number appears twice.
    #[error("shard {0} is listed twice")]
    DuplicateShard(u32),
    /// A progress report goes backwards or past the end of its shard.
    #[error(
        "entry {entry} (epoch {epoch}, shard {shard}): consumed {consumed} is invalid ({reason})"
    )]
    BadProgress {
        /// Queue index.
        entry: u64,
        /// Epoch.
        epoch: u64,
        /// Shard.
        shard: u32,
        /// Reported prefix.
        consumed: u64,
        /// Why it is refused.
        reason: String,
    },
    /// A serialized cursor does not belong to this plan.
    #[error("cursor does not match the dataset plan: {0}")]
    CursorMismatch(String),
    /// A world size of zero.
    #[error("world size must be at least 1")]
    NoWorkers,
}

/// Errors of the alphas config, the masking config and masking a sample.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    /// An alphas file could not be read.
    #[error("alphas config {path}: cannot read it")]
    AlphasRead {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An alphas file is not valid YAML / TOML, or does not have ml-4m's schema.
    #[error("alphas config {origin}: cannot parse it")]
    AlphasParse {
        /// The file, or `<yaml>` / `<toml>` for a string.
        origin: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An alphas config parses but is inconsistent.
    #[error("alphas config {origin}: modality `{modality}`: {reason}")]
    Alphas {
        /// The file, or `<yaml>` / `<toml>` / `<built>`.
        origin: String,
        /// The modality at fault (`*` for the whole file).
        modality: String,
        /// What is wrong.
        reason: String,
    },
    /// The masking config is inconsistent (or does not fit the alphas or the tokenizer).
    #[error("masking config: modality `{modality}`: {reason}")]
    Config {
        /// The modality at fault (`*` for the whole config).
        modality: String,
        /// What is wrong.
        reason: String,
    },
    /// A sample handed to the masker does not fit the masking config.
    #[error("sample to mask: modality `{modality}`: {reason}")]
    Input {
        /// The modality at fault.
        modality: String,
        /// What is wrong.
        reason: String,
    },
}

/// Errors of the text tokenizer and the image tokenizers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A tokenizer or codebook file could not be read or written.
    #[error("tokenizer file {path}: I/O error")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer file is not a valid HF `tokenizers` JSON / codebook file.
    #[error("tokenizer {origin}: cannot parse it")]
    Parse {
        /// The file, or a description of the bytes.
        origin: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A tokenizer lacks a token ml-4m's layout needs, or has an inconsistent one.
    #[error("tokenizer {origin}: {reason}")]
    Layout {
        /// The file, or a description.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Encoding, decoding or training failed inside the `tokenizers` crate.
    #[error("text tokenizer: {what} failed")]
    Text {
        /// The operation (`encode`, `decode`, `train`, `serialize`).
        what: &'static str,
        /// The crate's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Options of training or of an image tokenizer are inconsistent.
    #[error("tokenizer options: {0}")]
    Options(String),
    /// Data handed to an image tokenizer does not fit it.
    #[error("image tokenizer `{modality}`: {reason}")]
    Image {
        /// The modality.
        modality: String,
        /// What is wrong.
        reason: String,
    },
}
