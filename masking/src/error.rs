//! The masking crate's error type.

/// Errors of the alphas config, the masking config, masking a sample and the text tokenizer.
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
    /// A tokenizer file could not be read or written.
    #[error("tokenizer file {path}: I/O error")]
    TokenizerIo {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer file is not a valid HF `tokenizers` JSON file.
    #[error("tokenizer {origin}: cannot parse it")]
    TokenizerParse {
        /// The file, or a description of the bytes.
        origin: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A tokenizer lacks a token ml-4m's layout needs, or has an inconsistent one.
    #[error("tokenizer {origin}: {reason}")]
    TokenizerLayout {
        /// The file, or a description.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Encoding, decoding or training failed inside the `tokenizers` crate.
    #[error("text tokenizer: {what} failed")]
    TokenizerText {
        /// The operation (`encode`, `decode`, `train`, `serialize`).
        what: &'static str,
        /// The crate's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Options of training a tokenizer are inconsistent.
    #[error("tokenizer options: {0}")]
    TokenizerOptions(String),
}
