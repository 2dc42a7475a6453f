//! The model crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong when configuring, feeding, loading or saving a 4M model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model or modality configuration is inconsistent.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A batch does not fit the model (unknown modality, wrong length, id out of range...).
    #[error("invalid batch for modality `{modality}`: {reason}")]
    Batch {
        /// The modality whose data is wrong (`*` for batch-wide problems).
        modality: String,
        /// What is wrong.
        reason: String,
    },
    /// A weights file could not be read or written.
    #[error("weights file {path}: {reason}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor in a weights file does not fit the model.
    #[error("weights entry `{name}`: {reason}")]
    WeightEntry {
        /// ml-4m name of the entry.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A generation request cannot be carried out (plan, conditions, or a hook's answer).
    #[error("generation of `{modality}`: {reason}")]
    Generation {
        /// The modality being generated or conditioned on (`*` for plan-wide problems).
        modality: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn batch(modality: &str, reason: impl Into<String>) -> Self {
        ModelError::Batch {
            modality: modality.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn generation(modality: &str, reason: impl Into<String>) -> Self {
        ModelError::Generation {
            modality: modality.to_string(),
            reason: reason.into(),
        }
    }
}
