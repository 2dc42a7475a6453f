//! The evaluation's error type.

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Reading the split failed.
    #[error(transparent)]
    Data(#[from] fourm_data::DataError),
    /// A tokenizer or picture of the split is unreadable.
    #[error(transparent)]
    Synth(#[from] fourm_synth::SynthError),
    /// The text tokenizer failed.
    #[error(transparent)]
    Text(#[from] fourm_masking::MaskError),
    /// The model refused an input.
    #[error(transparent)]
    Model(#[from] fourm_model::ModelError),
    /// A sample lacks what the evaluation needs.
    #[error("sample {key}: {reason}")]
    Sample {
        /// The sample (or the split).
        key: String,
        /// What is missing.
        reason: String,
    },
    /// A task names a modality the model or the split lacks, or cannot be generated.
    #[error("task {task}: {reason}")]
    Task {
        /// The task.
        task: String,
        /// Why.
        reason: String,
    },
}
