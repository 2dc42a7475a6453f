//! The communicator handle and the raw NCCL calls on it.

use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cudarc::driver::sys as cu;
use cudarc::driver::{CudaContext, DriverError};
use cudarc::nccl::sys as nccl;

use super::NcclUniqueId;
use crate::{CollectiveError, Operation};

/// `NCCL_VERSION(2, 30, 0)`: cudarc's `nccl` feature binds the NCCL 2.30 headers, and this is the
/// version of their `ncclConfig_t` (newer libraries read older configs by their size and version).
const CONFIG_VERSION: u32 = 23000;

/// A non-blocking communicator, shared between its collective and the abort hook.
#[derive(Debug)]
pub(super) struct Comm {
    rank: usize,
    world_size: usize,
    pub ctx: Arc<CudaContext>,
    /// `None` once aborted.
    handle: Mutex<Option<Handle>>,
}

#[derive(Debug)]
struct Handle(nccl::ncclComm_t);

// SAFETY: an NCCL communicator may be used from any thread as long as calls are not concurrent,
// which the mutex around the handle guarantees.
unsafe impl Send for Handle {}

impl Comm {
    /// Starts joining the communicator (`ncclCommInitRankConfig`, non-blocking): the caller polls
    /// [`async_state`](Self::async_state) until it leaves `ncclInProgress`. `ctx` must be current
    /// on this thread.
    pub fn init(
        ctx: Arc<CudaContext>,
        id: &NcclUniqueId,
        rank: usize,
        world_size: usize,
    ) -> Result<Self, CollectiveError> {
        let (Ok(nranks), Ok(rank_c)) = (c_int::try_from(world_size), c_int::try_from(rank)) else {
            return Err(CollectiveError::InvalidGroup { rank, world_size });
        };
        let mut config = nonblocking_config();
        let mut handle: nccl::ncclComm_t = ptr::null_mut();
        // SAFETY: `handle` and `config` are valid for the call; the id is passed by value.
        let started = unsafe {
            nccl::ncclCommInitRankConfig(&mut handle, nranks, id.to_sys(), rank_c, &mut config)
        };
        let comm = Self {
            rank,
            world_size,
            ctx,
            handle: Mutex::new((!handle.is_null()).then_some(Handle(handle))),
        };
        if !in_progress_or_done(started) {
            comm.abort();
            return Err(nccl_error(rank, "ncclCommInitRankConfig", started, None));
        }
        Ok(comm)
    }

    /// Queues `operation` in place on `len` floats at device address `ptr`, on `stream`.
    /// `Ok(false)` if the communicator was aborted.
    ///
    /// For [`Operation::ReduceScatterSum`] and [`Operation::AllGather`], `len` is the padded
    /// length (a multiple of the world size) and rank `r`'s shard is the `r`-th of `world_size`
    /// equal parts. The caller guarantees that `ptr` holds `len` floats on this communicator's
    /// device.
    pub fn enqueue(
        &self,
        operation: Operation,
        ptr: u64,
        len: usize,
        stream: cu::CUstream,
    ) -> Result<bool, CollectiveError> {
        let guard = self.lock();
        let Some(handle) = guard.as_ref() else {
            return Ok(false);
        };
        let buf = ptr as usize as *mut c_void;
        let stream = stream as nccl::cudaStream_t;
        let float = nccl::ncclDataType_t::ncclFloat32;
        let (call, queued) = match operation {
            Operation::Broadcast { root } => {
                let root = c_int::try_from(root).unwrap_or(c_int::MAX);
                // SAFETY: see the caller's guarantee; the handle is live while the lock is held;
                // in place (same source and destination) is allowed by NCCL.
                let r =
                    unsafe { nccl::ncclBroadcast(buf, buf, len, float, root, handle.0, stream) };
                ("ncclBroadcast", r)
            }
            Operation::ReduceScatterSum => {
                let (count, shard) = self.shard(ptr, len);
                let sum = nccl::ncclRedOp_t::ncclSum;
                // SAFETY: as above; in place (the result lands in this rank's shard of the
                // source) is allowed by NCCL.
                let r = unsafe {
                    nccl::ncclReduceScatter(buf, shard, count, float, sum, handle.0, stream)
                };
                ("ncclReduceScatter", r)
            }
            Operation::AllGather => {
                let (count, shard) = self.shard(ptr, len);
                // SAFETY: as above; in place (the contribution is this rank's shard of the
                // destination) is allowed by NCCL.
                let r = unsafe { nccl::ncclAllGather(shard, buf, count, float, handle.0, stream) };
                ("ncclAllGather", r)
            }
            Operation::AllReduceSum
            | Operation::AllReduceMean
            | Operation::Barrier
            | Operation::Rendezvous => {
                let op = match operation {
                    Operation::AllReduceMean => nccl::ncclRedOp_t::ncclAvg,
                    _ => nccl::ncclRedOp_t::ncclSum,
                };
                // SAFETY: as above.
                let r = unsafe { nccl::ncclAllReduce(buf, buf, len, float, op, handle.0, stream) };
                ("ncclAllReduce", r)
            }
        };
        drop(guard);
        if in_progress_or_done(queued) {
            Ok(true)
        } else {
            Err(nccl_error(self.rank, call, queued, self.last_error()))
        }
    }

    /// The count per rank of a buffer of `len` (padded) floats at `ptr`, and the address of this
    /// rank's shard in it.
    fn shard(&self, ptr: u64, len: usize) -> (usize, *mut c_void) {
        debug_assert!(len.is_multiple_of(self.world_size), "padded by the caller");
        let count = len / self.world_size;
        // rank * count < len elements: inside the buffer.
        let offset = (self.rank * count * size_of::<f32>()) as u64;
        (count, (ptr + offset) as usize as *mut c_void)
    }

    /// `ncclCommAbort`, once; later calls and operations find no communicator.
    pub fn abort(&self) {
        let Some(handle) = self.lock().take() else {
            return;
        };
        let _ = self.ctx.bind_to_thread();
        // SAFETY: the handle came from ncclCommInitRankConfig and was taken out of the mutex, so
        // no other call can use it after this one.
        let result = unsafe { nccl::ncclCommAbort(handle.0) };
        tracing::info!(rank = self.rank, ?result, "nccl communicator aborted");
    }

    /// `ncclCommGetAsyncError`: `ncclInProgress` while initialising or queueing, `ncclSuccess`
    /// when idle or running, an error when the communicator failed; `None` once aborted.
    pub fn async_state(&self) -> Option<nccl::ncclResult_t> {
        let guard = self.lock();
        let handle = guard.as_ref()?;
        let mut state = nccl::ncclResult_t::ncclSuccess;
        // SAFETY: the handle is live while the lock is held; `state` is a valid out-pointer.
        let result = unsafe { nccl::ncclCommGetAsyncError(handle.0, &mut state) };
        Some(if result == nccl::ncclResult_t::ncclSuccess {
            state
        } else {
            result
        })
    }

    /// NCCL's description of the communicator's last error.
    pub fn last_error(&self) -> Option<String> {
        let guard = self.lock();
        let handle = guard.as_ref()?;
        // SAFETY: the handle is live while the lock is held.
        let text = unsafe { nccl::ncclGetLastError(handle.0) };
        if text.is_null() {
            return None;
        }
        // SAFETY: non-null and NUL-terminated; copied before the next NCCL call.
        Some(
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    fn lock(&self) -> MutexGuard<'_, Option<Handle>> {
        self.handle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        // Every operation waits for its completion, so nothing is in flight: aborting only frees
        // the resources, and unlike ncclCommDestroy it cannot wait on a dead peer.
        self.abort();
    }
}

fn in_progress_or_done(result: nccl::ncclResult_t) -> bool {
    matches!(
        result,
        nccl::ncclResult_t::ncclSuccess | nccl::ncclResult_t::ncclInProgress
    )
}

/// `NCCL_CONFIG_INITIALIZER` (every attribute unset) with `blocking = 0`.
fn nonblocking_config() -> nccl::ncclConfig_t {
    const UNSET: c_int = c_int::MIN;
    nccl::ncclConfig_t {
        size: size_of::<nccl::ncclConfig_t>(),
        magic: 0xcafe_beef,
        version: CONFIG_VERSION,
        blocking: 0,
        cgaClusterSize: UNSET,
        minCTAs: UNSET,
        maxCTAs: UNSET,
        netName: ptr::null(),
        splitShare: UNSET,
        trafficClass: UNSET,
        commName: ptr::null(),
        collnetEnable: UNSET,
        CTAPolicy: UNSET,
        shrinkShare: UNSET,
        nvlsCTAs: UNSET,
        nChannelsPerNetPeer: UNSET,
        nvlinkCentricSched: UNSET,
        graphUsageMode: UNSET,
        numRmaCtx: UNSET,
        maxP2pPeers: UNSET,
    }
}

pub(super) fn require_cuda() -> Result<(), CollectiveError> {
    // SAFETY: only tries to open the library.
    if unsafe { cu::is_culib_present() } {
        Ok(())
    } else {
        Err(CollectiveError::LibraryMissing { library: "cuda" })
    }
}

pub(super) fn require_nccl() -> Result<(), CollectiveError> {
    // SAFETY: only tries to open the library.
    if unsafe { nccl::is_culib_present() } {
        Ok(())
    } else {
        Err(CollectiveError::LibraryMissing { library: "nccl" })
    }
}

pub(super) fn nccl_error(
    rank: usize,
    call: &'static str,
    code: nccl::ncclResult_t,
    detail: Option<String>,
) -> CollectiveError {
    // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
    let text = unsafe { nccl::ncclGetErrorString(code) };
    let description = if text.is_null() {
        String::new()
    } else {
        // SAFETY: non-null static string.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    CollectiveError::Nccl {
        rank,
        call,
        code: format!("{code:?}"),
        message: match detail {
            Some(detail) if !detail.is_empty() => format!("{description}: {detail}"),
            _ => description,
        },
    }
}

pub(super) fn cuda_error(rank: usize, call: &'static str, source: DriverError) -> CollectiveError {
    CollectiveError::Cuda { rank, call, source }
}
