//! The `Collective` trait: what one rank of a group can ask of the group.

use std::fmt;

use crate::{AbortHandle, CollectiveError};

/// One rank of a group of [`world_size`](Collective::world_size) ranks that reduce, gather and
/// broadcast flat `f32` buffers together.
///
/// Every rank calls the same operations in the same order with buffers of the same length; an
/// implementation that can detect a disagreement returns
/// [`CollectiveError::Mismatch`] rather than mixing up data. Results are bit-identical on every
/// rank and deterministic for a given world size and buffer length. An operation that fails
/// (anything but a refused argument such as an invalid root) leaves the collective unusable
/// ([`CollectiveError::Broken`]): the caller builds a new one, typically for the next generation.
/// With `world_size == 1` every operation is a no-op.
///
/// Operations block the calling thread; [`abort_handle`](Collective::abort_handle) gives a handle
/// that another thread can use to make them return [`CollectiveError::Aborted`].
pub trait Collective: Send {
    /// This rank, in `0..world_size`.
    fn rank(&self) -> usize;

    /// The number of ranks in the group.
    fn world_size(&self) -> usize;

    /// Replaces `buf` on every rank by the element-wise sum of all ranks' buffers.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError>;

    /// Replaces `buf` on every rank by the element-wise mean of all ranks' buffers.
    ///
    /// The default sums, then divides every element by `world_size` (a correctly rounded
    /// division, so the mean of sums that are exact is exact whenever it is representable).
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.all_reduce_sum(buf)?;
        let n = self.world_size() as f32;
        if self.world_size() > 1 {
            buf.iter_mut().for_each(|x| *x /= n);
        }
        Ok(())
    }

    /// Sums `buf` element-wise over the ranks, but only this rank's shard
    /// ([`shard_range`](crate::shard_range)`(buf.len(), world_size, rank)`) is guaranteed to
    /// hold the sum on return; the rest of `buf` is unspecified. Deterministic for a given world
    /// size and length.
    ///
    /// Followed by [`all_gather`](Collective::all_gather) it gives every rank the whole sum, as
    /// [`all_reduce_sum`](Collective::all_reduce_sum) does (though not necessarily with the same
    /// rounding); in between, each rank can update the state of its shard alone (ZeRO-1). A
    /// rank whose shard is empty (fewer elements than ranks) still takes part.
    fn reduce_scatter_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError>;

    /// Every rank contributes its own shard of `buf`
    /// ([`shard_range`](crate::shard_range)`(buf.len(), world_size, rank)`); on return every
    /// rank's `buf` holds every rank's shard, bit-identical copies of what their owners
    /// contributed. What `buf` held outside this rank's shard is overwritten.
    fn all_gather(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError>;

    /// Copies `root`'s `buf` into every other rank's `buf`.
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<(), CollectiveError>;

    /// Returns once every rank has entered the barrier.
    fn barrier(&mut self) -> Result<(), CollectiveError>;

    /// A handle that aborts this collective from another thread.
    fn abort_handle(&self) -> AbortHandle;

    /// The memory the `*_device` operations take, if any: where a caller's tensors must live for
    /// it to hand their buffers over in place rather than through a host slice.
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }

    /// In-place sum over a flat `f32` buffer in device memory: `len` elements at device address
    /// `ptr`, ordered after the work already queued on the CUDA stream `stream` (a `CUstream`
    /// handle; 0 is the legacy default stream). Returns once the result is in place.
    ///
    /// The caller guarantees that `ptr` is a live allocation of at least `len` `f32`s on this
    /// collective's device that nothing else writes until the call returns. Only the NCCL
    /// implementation supports it; the others return [`CollectiveError::Unsupported`].
    fn all_reduce_sum_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let _ = (ptr, len, stream);
        Err(unsupported(self, Operation::AllReduceSum))
    }

    /// Like [`all_reduce_sum_device`](Collective::all_reduce_sum_device), for the mean.
    fn all_reduce_mean_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let _ = (ptr, len, stream);
        Err(unsupported(self, Operation::AllReduceMean))
    }

    /// Like [`reduce_scatter_sum`](Collective::reduce_scatter_sum), in place on a flat `f32`
    /// buffer of `len` elements in device memory at `ptr`, ordered after the work queued on
    /// `stream` (as for [`all_reduce_sum_device`](Collective::all_reduce_sum_device)).
    ///
    /// The caller guarantees that `ptr` is a live allocation of at least
    /// [`padded_len`](crate::padded_len)`(len, world_size)` `f32`s on this collective's device
    /// that nothing else uses until the call returns: every shard is full on the device, and
    /// the elements in `len..padded_len` are summed too (they are unspecified on return). Only
    /// the NCCL implementation supports it; the others return [`CollectiveError::Unsupported`].
    fn reduce_scatter_sum_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let _ = (ptr, len, stream);
        Err(unsupported(self, Operation::ReduceScatterSum))
    }

    /// Like [`all_gather`](Collective::all_gather), in place on a flat `f32` buffer of `len`
    /// elements in device memory at `ptr`, ordered after the work queued on `stream`.
    ///
    /// The caller guarantees that `ptr` is a live allocation of at least
    /// [`padded_len`](crate::padded_len)`(len, world_size)` `f32`s on this collective's device
    /// that nothing else uses until the call returns; the elements in `len..padded_len` travel
    /// with the last shards and are unspecified on return. Only the NCCL implementation
    /// supports it; the others return [`CollectiveError::Unsupported`].
    fn all_gather_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let _ = (ptr, len, stream);
        Err(unsupported(self, Operation::AllGather))
    }

    /// A short name of the implementation, for logs and errors ("tcp ring", "in-process", "nccl").
    fn implementation(&self) -> &'static str;
}

/// Where the buffers of a collective's `*_device` operations live
/// ([`Collective::device_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceMemory {
    /// Host memory, where a CPU backend keeps its tensors: the address is a host pointer.
    Host,
    /// Global memory of CUDA device `ordinal`.
    Cuda {
        /// The device's index.
        ordinal: usize,
    },
}

/// A collective operation, named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Connecting to the peers.
    Rendezvous,
    /// [`Collective::all_reduce_sum`].
    AllReduceSum,
    /// [`Collective::all_reduce_mean`].
    AllReduceMean,
    /// [`Collective::reduce_scatter_sum`].
    ReduceScatterSum,
    /// [`Collective::all_gather`].
    AllGather,
    /// [`Collective::broadcast`] from `root`.
    Broadcast {
        /// The rank whose buffer is copied.
        root: usize,
    },
    /// [`Collective::barrier`].
    Barrier,
}

/// The error of an operation the implementation `c` does not support (the device-memory
/// defaults of [`Collective`]).
fn unsupported<C: Collective + ?Sized>(c: &C, operation: Operation) -> CollectiveError {
    CollectiveError::Unsupported {
        rank: c.rank(),
        operation,
        implementation: c.implementation(),
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rendezvous => f.write_str("rendezvous"),
            Self::AllReduceSum => f.write_str("all-reduce (sum)"),
            Self::AllReduceMean => f.write_str("all-reduce (mean)"),
            Self::ReduceScatterSum => f.write_str("reduce-scatter (sum)"),
            Self::AllGather => f.write_str("all-gather"),
            Self::Broadcast { root } => write!(f, "broadcast from rank {root}"),
            Self::Barrier => f.write_str("barrier"),
        }
    }
}
