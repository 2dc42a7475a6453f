//! Collectives for data-parallel training: one [`Collective`] trait and its implementations.
//!
//! * [`RingCollective`]: a bandwidth-optimal ring over TCP (reduce-scatter then all-gather,
//!   pipelined in sub-chunks) for CPU clusters and CI, with per-operation timeouts, abort and a
//!   generation-checked rendezvous.
//! * [`LocalCollective`]: ranks as threads of one process, for unit tests.
//! * `NcclCollective` (feature `cuda`): NCCL through `cudarc`, loaded at run time; in-place
//!   all-reduce, reduce-scatter and all-gather on device buffers and an abort that calls
//!   `ncclCommAbort`.
//!
//! Besides all-reduce, broadcast and barrier, every implementation offers the two halves of an
//! all-reduce for sharded optimizer state (ZeRO-1): [`Collective::reduce_scatter_sum`] leaves
//! each rank the sum of its own shard of the buffer, [`Collective::all_gather`] hands every rank
//! every rank's shard. [`shard_range`] says which shard a rank owns.
//!
//! Every implementation gives bit-identical results on every rank, and the same bits on every run
//! for a given world size and buffer length. The crate knows nothing about tensors: the worker
//! hands it flat `f32` buffers (host slices, or raw device pointers for NCCL).
//!
//! ```
//! use fourm_collective::{Collective, LocalCollective, LocalConfig};
//!
//! let group = LocalCollective::group(2, &LocalConfig::default())?;
//! std::thread::scope(|s| {
//!     for mut rank in group {
//!         s.spawn(move || {
//!             let mut grads = vec![rank.rank() as f32 + 1.0; 4];
//!             rank.all_reduce_mean(&mut grads).unwrap();
//!             assert_eq!(grads, vec![1.5; 4]);
//!         });
//!     }
//! });
//! # Ok::<(), fourm_collective::CollectiveError>(())
//! ```

mod abort;
mod collective;
mod error;
mod local;
#[cfg(feature = "cuda")]
// NCCL and the CUDA driver are C APIs: this module is the crate's only unsafe code.
#[allow(unsafe_code)]
mod nccl;
mod pipeline;
mod rendezvous;
mod ring;
mod segments;
mod shard;
mod wire;

pub use abort::AbortHandle;
pub use collective::{Collective, DeviceMemory, Operation};
pub use error::{CollectiveError, Peer, RejectReason};
pub use local::{LocalCollective, LocalConfig};
#[cfg(feature = "cuda")]
pub use nccl::{NcclCollective, NcclConfig, NcclUniqueId};
pub use rendezvous::Rendezvous;
pub use ring::{RingCollective, RingConfig};
pub use shard::{padded_len, shard_range};
pub use wire::OpSignature;
