//! Training utilities with ml-4m's semantics: parameters and gradients as one flat vector in
//! module-visit order (what a data-parallel worker all-reduces), AdamW with ml-4m's
//! weight-decay groups, the warm-up + cosine learning-rate schedule, global-norm clipping.

mod adamw;
mod clip;
mod flat;
mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_global_norm, global_norm};
pub use flat::{FlatEntry, ParamLayout};
pub use schedule::{CosineSchedule, scaled_lr};
