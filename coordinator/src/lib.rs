//! # fourm-coordinator
//!
//! One coordinator per training job: membership and generations, ranks and rendezvous, data leases
//! with the exactly-once cursor, checkpoint commits, metrics. The logic is a pure state machine
//! ([`state::StateMachine`]); the gRPC service, the object store and the clock are adapters around
//! it. This crate never links burn or CUDA.

pub mod auth;
pub mod cli;
pub mod config;
pub mod durable;
mod error;
mod http;
pub mod manifest;
pub mod server;
pub mod service;
mod shared;
pub mod state;

pub use error::StateError;
