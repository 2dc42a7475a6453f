//! The coordinator's error types and their gRPC status codes.

use fourm_plan::PlanError;

/// A request the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The worker never registered (or was forgotten after missing its heartbeats).
    #[error("unknown worker `{worker}`: register first")]
    UnknownWorker {
        /// The worker id.
        worker: String,
    },
    /// The request belongs to a generation that has ended.
    #[error("stale generation {got}: the current generation is {current}")]
    StaleGeneration {
        /// Generation in the request.
        got: u64,
        /// Current generation (0 if none).
        current: u64,
    },
    /// The worker is not a member of the running generation.
    #[error("worker `{worker}` is not a member of generation {generation}")]
    NotMember {
        /// The worker id.
        worker: String,
        /// The running generation.
        generation: u64,
    },
    /// Only rank 0 may do this.
    #[error("worker `{worker}` is rank {rank}; only rank 0 may {what}")]
    NotRankZero {
        /// The worker id.
        worker: String,
        /// Its rank.
        rank: u32,
        /// The refused action.
        what: &'static str,
    },
    /// A registration is malformed or does not match the job.
    #[error("invalid registration of `{worker}`: {reason}")]
    BadRegistration {
        /// The worker id.
        worker: String,
        /// What is wrong.
        reason: String,
    },
    /// Progress that goes backwards, or for an entry of another rank.
    #[error("progress of `{worker}` refused: {reason}")]
    BadProgress {
        /// The worker id.
        worker: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint acknowledgement that does not fit the protocol.
    #[error("checkpoint of step {step} from `{worker}` refused: {reason}")]
    BadCheckpoint {
        /// The worker id.
        worker: String,
        /// The step.
        step: u64,
        /// What is wrong.
        reason: String,
    },
    /// The data plan refused an operation.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl From<StateError> for tonic::Status {
    fn from(e: StateError) -> Self {
        let msg = e.to_string();
        match e {
            StateError::UnknownWorker { .. } => tonic::Status::not_found(msg),
            StateError::StaleGeneration { .. } | StateError::NotMember { .. } => {
                tonic::Status::failed_precondition(msg)
            }
            StateError::NotRankZero { .. } => tonic::Status::permission_denied(msg),
            StateError::BadRegistration { .. } => tonic::Status::invalid_argument(msg),
            StateError::BadProgress { .. }
            | StateError::BadCheckpoint { .. }
            | StateError::Plan(_) => tonic::Status::invalid_argument(msg),
        }
    }
}
