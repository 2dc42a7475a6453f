//! # fourm-worker
//!
//! One process per GPU (or CPU): joins the coordinator, streams and masks its shards, trains 4M
//! data-parallel with one all-reduce per step, checkpoints to object storage, and rejoins after
//! failures. The model is single-device code ([`fourm_model`]); everything parallel is here.

pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
mod error;
pub mod failure;
pub mod generation;
mod heartbeat;
pub mod metrics;
mod nccl;
pub mod pipeline;
pub mod reduce;
mod reporter;
mod run;
pub mod setup;
pub mod step;
pub mod validation;

pub use error::WorkerError;
pub use run::run;
