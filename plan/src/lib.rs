//! # fourm-plan
//!
//! Which sample every rank reads at every step, and the exactly-once record of what committed
//! steps consumed. Pure logic, shared by the coordinator (which hands out leases and commits the
//! cursor) and the workers (which read their stream); no I/O.
//!
//! - [`EpochPlan`]: epochs laid end to end as a queue of (epoch, shard) entries, shard and sample
//!   orders seeded by the job's seed, independent of the world size.
//! - [`Assignment`]: which rank reads which entries, re-dealt when the world size changes.
//! - [`RankStream`]: one rank's samples in order, from any [`Cursor`].
//! - [`Cursor`]: per entry, the consumed prefix of committed steps.
//! - [`derive_seed`], [`permutation`], [`rng_for`]: seeds and shuffles that never depend on a
//!   library's algorithm.

mod assignment;
mod cursor;
mod epoch;
mod error;
mod seed;
mod stream;

pub use assignment::Assignment;
pub use cursor::{Cursor, CursorEntry, CursorState};
pub use epoch::{Entry, EpochPlan, ShardSize};
pub use error::PlanError;
pub use seed::{derive_seed, permutation, rng_for, shuffle};
pub use stream::{RankEntries, RankStream, SampleRef};
