//! The synthetic dataset's error type.

use fourm_data::DataError;
use fourm_masking::MaskError;

/// Errors of the synthetic dataset: rendering, encoding pictures, writing and reading it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// The generation options are inconsistent.
    #[error("synthetic dataset options: {0}")]
    Options(String),
    /// A PNG could not be encoded or decoded.
    #[error("png {what}: {reason}")]
    Png {
        /// What was being encoded or decoded (entry name, modality).
        what: String,
        /// The codec's message.
        reason: String,
    },
    /// The text tokenizer failed.
    #[error(transparent)]
    Text(#[from] MaskError),
    /// Reading or writing the dataset failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A sample asked for is not in the dataset, or lacks a modality.
    #[error("dataset {url}: {reason}")]
    Sample {
        /// The dataset.
        url: String,
        /// What is missing.
        reason: String,
    },
    /// A codebook file could not be read or written.
    #[error("codebook file {path}: I/O error")]
    CodebookIo {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A codebook file is not a valid codebook.
    #[error("codebook {origin}: cannot parse it ({reason})")]
    CodebookParse {
        /// The file, or a description of the bytes.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Data handed to an image tokenizer does not fit it, or its options are inconsistent.
    #[error("image tokenizer `{modality}`: {reason}")]
    Image {
        /// The modality.
        modality: String,
        /// What is wrong.
        reason: String,
    },
}
