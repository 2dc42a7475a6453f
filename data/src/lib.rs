//! # fourm-data
//!
//! fourm's data plane. This crate never depends on burn: it yields plain token arrays.
//!
//! - [`EpochPlan`], [`Assignment`], [`RankStream`] and [`Cursor`]: which sample every rank reads at
//!   every step, and the exactly-once record of what committed steps consumed.

mod assignment;
mod cursor;
mod error;
mod plan;
mod seed;
mod stream;

pub use assignment::Assignment;
pub use cursor::Cursor;
pub use error::PlanError;
pub use plan::{Entry, EpochPlan, ShardSize};
pub use seed::{derive_seed, permutation, rng_for};
pub use stream::{RankEntries, RankStream, SampleRef};
