//! The plan crate's error type.

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
