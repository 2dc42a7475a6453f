//! # fourm-eval
//!
//! What a 4M model learned, measured on held-out data:
//!
//! - [`heldout_loss`]: the training loss per modality on held-out samples masked with fixed seeds;
//! - [`Evaluator`]: cross-modal [`Task`]s (`rgb->depth`, `rgb->semseg`, `rgb->normal`,
//!   `rgb->caption`, `caption->rgb`, `rgb->det`), the target generated from the source alone
//!   with the model's own sampler, scored against the ground truth ([`metrics`]): token accuracy,
//!   and on the synthetic dataset decoded-pixel metrics (segmentation mIoU and pixel accuracy,
//!   depth abs-rel and δ < 1.25, normal angular error), caption exact match and per-attribute
//!   accuracy, box AP@0.5, each next to its trivial baseline;
//! - [`Report`]: the table, `eval.json`, and [`sample_grid`], a picture of examples.
//!
//! Every score is kept as sums that add across samples (and across ranks, for validation during
//! training), except box AP, which needs the whole list.

mod error;
mod loss;
pub mod metrics;
mod report;
mod run;
mod score;
mod split;
mod task;

pub use error::EvalError;
pub use loss::{LossSums, heldout_loss};
pub use report::{Metric, Report, TaskReport, sample_grid};
pub use run::{Evaluator, RunOptions, TaskOutcome};
pub use score::{Prediction, Sums, baseline, score};
pub use split::{EvalSample, EvalSet};
pub use task::{DEFAULT_TASKS, KINDS, Task};
