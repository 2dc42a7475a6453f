//! # fourm-proto
//!
//! The gRPC contract between fourm workers and the coordinator (`fourm.v1`), compiled from
//! `proto/fourm/v1/coordinator.proto` without a system `protoc`.

#![allow(missing_docs, clippy::all)]

/// `fourm.v1`: the coordinator service and its messages.
pub mod v1 {
    tonic::include_proto!("fourm.v1");
}

/// Metadata key carrying the job token (`authorization: Bearer <token>`).
pub const AUTH_HEADER: &str = "authorization";
