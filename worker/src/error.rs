//! The worker's error type.

use fourm_collective::CollectiveError;
use fourm_data::DataError;
use fourm_masking::MaskError;
use fourm_model::ModelError;
use fourm_plan::PlanError;

use crate::checkpoint::CheckpointError;
use crate::client::ClientError;
use crate::config::ConfigError;
use crate::failure::Failure;
use crate::pipeline::PipelineError;
use crate::step::StepError;
use fourm_proto::v1 as pb;

/// Why a worker (or one of its generations) stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Setting up the data, model or device failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The coordinator refused a request or was unreachable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The dataset.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The data plan or cursor.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Masking or the text tokenizer.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// The model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The collective.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// A checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The input pipeline.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A training step.
    #[error(transparent)]
    Step(#[from] StepError),
    /// Validation on the held-out split.
    #[error(transparent)]
    Eval(#[from] fourm_eval::EvalError),
    /// The coordinator says the job failed.
    #[error("the job failed: {0}")]
    JobFailed(String),
    /// I/O (the collective listener, the audit file).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl WorkerError {
    pub(crate) fn setup(reason: impl Into<String>) -> Self {
        WorkerError::Setup(reason.into())
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        WorkerError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether no new generation can mend it (the worker's configuration or setup): the worker
    /// stops. Anything else ends the generation, and the worker rejoins.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            WorkerError::Config(_) | WorkerError::Setup(_) | WorkerError::Model(_)
        )
    }

    /// How this error is reported as a generation failure.
    pub(crate) fn as_failure(&self) -> Failure {
        let kind = match self {
            WorkerError::Collective(_) => pb::FailureKind::Collective,
            WorkerError::Checkpoint(
                CheckpointError::Corrupt { .. } | CheckpointError::NotCommitted { .. },
            ) => pb::FailureKind::BadCheckpoint,
            _ => pb::FailureKind::Other,
        };
        let mut f = Failure::new(kind, self.to_string());
        if let WorkerError::Checkpoint(e) = self {
            f.checkpoint = e.folder().map(str::to_string);
        }
        f
    }
}
