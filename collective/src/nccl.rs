//! NCCL through `cudarc` (feature `cuda`), with the CUDA driver and NCCL loaded at run time.
//!
//! Rank 0 creates an [`NcclUniqueId`]; the coordinator relays its bytes to the other ranks, which
//! parse them with [`NcclUniqueId::from_bytes`]; every rank then builds its [`NcclCollective`].
//!
//! A dead peer must never hang a worker. The communicator is therefore *non-blocking*
//! (`ncclConfig_t::blocking = 0`): initialisation and every call return at once, and this rank
//! polls for completion (`ncclCommGetAsyncError`, a CUDA event) while watching its deadline and
//! its [`AbortHandle`]. Aborting from another thread (the worker's watchdog) calls
//! `ncclCommAbort`, which stops the NCCL kernels still waiting for a peer; the polling operation
//! then returns [`CollectiveError::Aborted`]. A timeout aborts the communicator the same way.
//!
//! Every NCCL call on the communicator, including the abort, happens under one mutex, so the
//! watchdog can never free the communicator while another thread is inside an NCCL call; the
//! calls are non-blocking, so the watchdog never waits long for it.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cudarc::driver::sys as cu;
use cudarc::driver::{CudaContext, CudaStream, DevicePtrMut, DriverError};
use cudarc::nccl::sys as nccl;

use crate::{AbortHandle, Collective, CollectiveError, Operation};

/// The length of an NCCL unique id.
const ID_BYTES: usize = 128;
/// `NCCL_VERSION(2, 30, 0)`: cudarc's `nccl` feature binds the NCCL 2.30 headers, and this is the
/// version of their `ncclConfig_t` (newer libraries read older configs by their size and version).
const CONFIG_VERSION: u32 = 23000;
/// How often a waiting operation polls NCCL and the stream.
const POLL: Duration = Duration::from_micros(50);

/// The id that joins the ranks of one communicator: created by rank 0, passed to the others as
/// opaque bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NcclUniqueId([u8; ID_BYTES]);

impl NcclUniqueId {
    /// Creates a new id (on rank 0). Needs the NCCL library, not a GPU.
    pub fn new() -> Result<Self, CollectiveError> {
        require_nccl()?;
        let id = cudarc::nccl::result::get_uniqueid()
            .map_err(|e| nccl_error(0, "ncclGetUniqueId", e.0, None))?;
        Ok(Self(id.internal.map(|c| c as u8)))
    }

    /// The id's bytes, to relay to the other ranks.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Parses relayed bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CollectiveError> {
        let bytes: [u8; ID_BYTES] =
            bytes
                .try_into()
                .map_err(|_| CollectiveError::InvalidNcclId {
                    len: bytes.len(),
                    expected: ID_BYTES,
                })?;
        Ok(Self(bytes))
    }

    fn to_sys(self) -> nccl::ncclUniqueId {
        nccl::ncclUniqueId {
            internal: self.0.map(|b| b as c_char),
        }
    }
}

impl std::fmt::Debug for NcclUniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclUniqueId({:02x?}..)", &self.0[..8])
    }
}

/// Time limits of the NCCL collective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcclConfig {
    /// How long communicator initialisation may wait for every rank.
    pub init_timeout: Duration,
    /// How long one operation may take; then the communicator is aborted.
    pub op_timeout: Duration,
}

impl Default for NcclConfig {
    fn default() -> Self {
        Self {
            init_timeout: Duration::from_secs(120),
            op_timeout: Duration::from_secs(300),
        }
    }
}

/// One rank of an NCCL communicator, one GPU per rank.
///
/// The host-slice operations of [`Collective`] copy the buffer to the GPU and back (for tests and
/// small buffers); training uses [`Collective::all_reduce_mean_device`] on the flat gradient.
#[derive(Debug)]
pub struct NcclCollective {
    rank: usize,
    world_size: usize,
    comm: Arc<Comm>,
    /// The stream of the host-slice operations.
    stream: Arc<CudaStream>,
    config: NcclConfig,
    abort: AbortHandle,
    broken: Option<Operation>,
}

/// The communicator handle, shared with the abort hook.
#[derive(Debug)]
struct Comm {
    rank: usize,
    ctx: Arc<CudaContext>,
    /// `None` once aborted.
    handle: Mutex<Option<Handle>>,
}

#[derive(Debug)]
struct Handle(nccl::ncclComm_t);

// SAFETY: an NCCL communicator may be used from any thread as long as calls are not concurrent,
// which the mutex around the handle guarantees.
unsafe impl Send for Handle {}

impl NcclCollective {
    /// The number of CUDA devices; errors if the CUDA driver or NCCL cannot be loaded.
    pub fn device_count() -> Result<usize, CollectiveError> {
        require_cuda()?;
        require_nccl()?;
        let count =
            CudaContext::device_count().map_err(|e| cuda_error(0, "cuDeviceGetCount", e))?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Joins the communicator identified by `id` as `rank` of `world_size`, on GPU `device`.
    /// Every rank must call it; it returns once all have (or fails after
    /// `config.init_timeout`, or when `abort` fires).
    pub fn new(
        id: &NcclUniqueId,
        rank: usize,
        world_size: usize,
        device: usize,
        config: &NcclConfig,
        abort: AbortHandle,
    ) -> Result<Self, CollectiveError> {
        if rank >= world_size || c_int::try_from(world_size).is_err() {
            return Err(CollectiveError::InvalidGroup { rank, world_size });
        }
        for (key, value) in [
            ("init_timeout", config.init_timeout),
            ("op_timeout", config.op_timeout),
        ] {
            if value.is_zero() {
                return Err(CollectiveError::InvalidConfig {
                    key,
                    reason: "must be positive",
                });
            }
        }
        require_cuda()?;
        require_nccl()?;
        let ctx = CudaContext::new(device)
            .map_err(|e| cuda_error(rank, "cuDevicePrimaryCtxRetain", e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| cuda_error(rank, "cuStreamCreate", e))?;
        let mut nccl_config = nonblocking_config();
        let mut handle: nccl::ncclComm_t = ptr::null_mut();
        // SAFETY: `handle` and `nccl_config` are valid for the call; the id is passed by value.
        // The context of `device` is current on this thread (`CudaContext::new` binds it).
        let started = unsafe {
            nccl::ncclCommInitRankConfig(
                &mut handle,
                world_size as c_int,
                id.to_sys(),
                rank as c_int,
                &mut nccl_config,
            )
        };
        let comm = Arc::new(Comm {
            rank,
            ctx,
            handle: Mutex::new((!handle.is_null()).then_some(Handle(handle))),
        });
        if !matches!(
            started,
            nccl::ncclResult_t::ncclSuccess | nccl::ncclResult_t::ncclInProgress
        ) {
            comm.abort_comm();
            return Err(nccl_error(rank, "ncclCommInitRankConfig", started, None));
        }
        let weak = Arc::downgrade(&comm);
        abort.on_abort(move || {
            if let Some(comm) = weak.upgrade() {
                comm.abort_comm();
            }
        });
        let this = Self {
            rank,
            world_size,
            comm,
            stream,
            config: config.clone(),
            abort,
            broken: None,
        };
        let deadline = Instant::now() + config.init_timeout;
        this.wait(Operation::Rendezvous, deadline, config.init_timeout, || {
            Ok(true)
        })?;
        tracing::info!(rank, world_size, device, "nccl communicator ready");
        Ok(this)
    }

    /// Checks that the collective is usable for `operation`.
    fn ready(&self, operation: Operation) -> Result<(), CollectiveError> {
        if self.abort.is_aborted() {
            return Err(CollectiveError::Aborted {
                rank: self.rank,
                operation,
            });
        }
        match self.broken {
            Some(failed) => Err(CollectiveError::Broken {
                rank: self.rank,
                operation,
                failed,
            }),
            None => Ok(()),
        }
    }

    /// Runs one NCCL collective on `len` floats at `ptr`, on `stream`, and waits until it is done.
    fn run_device(
        &mut self,
        operation: Operation,
        ptr: u64,
        len: usize,
        stream: cu::CUstream,
    ) -> Result<(), CollectiveError> {
        self.ready(operation)?;
        if self.world_size == 1 || len == 0 {
            return Ok(());
        }
        let result = self.enqueue_and_wait(operation, ptr, len, stream);
        if result.is_err() {
            self.broken = Some(operation);
            self.comm.abort_comm();
        }
        result
    }

    fn enqueue_and_wait(
        &self,
        operation: Operation,
        ptr: u64,
        len: usize,
        stream: cu::CUstream,
    ) -> Result<(), CollectiveError> {
        let rank = self.rank;
        let (timeout, deadline) = (
            self.config.op_timeout,
            Instant::now() + self.config.op_timeout,
        );
        self.comm
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_error(rank, "cuCtxSetCurrent", e))?;
        let buf = ptr as usize as *mut c_void;
        let nccl_stream = stream as nccl::cudaStream_t;
        let f32_type = nccl::ncclDataType_t::ncclFloat32;
        let (call, queued) = {
            let guard = self.comm.lock();
            let Some(handle) = guard.as_ref() else {
                return Err(CollectiveError::Aborted { rank, operation });
            };
            // SAFETY: the caller of the device entry points guarantees that `ptr` holds `len`
            // floats on this device; `handle` is live while the lock is held; in-place calls pass
            // the same buffer as source and destination, which NCCL allows.
            unsafe {
                match operation {
                    Operation::AllReduceMean => (
                        "ncclAllReduce",
                        nccl::ncclAllReduce(
                            buf,
                            buf,
                            len,
                            f32_type,
                            nccl::ncclRedOp_t::ncclAvg,
                            handle.0,
                            nccl_stream,
                        ),
                    ),
                    Operation::Broadcast { root } => (
                        "ncclBroadcast",
                        nccl::ncclBroadcast(
                            buf,
                            buf,
                            len,
                            f32_type,
                            root as c_int,
                            handle.0,
                            nccl_stream,
                        ),
                    ),
                    _ => (
                        "ncclAllReduce",
                        nccl::ncclAllReduce(
                            buf,
                            buf,
                            len,
                            f32_type,
                            nccl::ncclRedOp_t::ncclSum,
                            handle.0,
                            nccl_stream,
                        ),
                    ),
                }
            }
        };
        if !matches!(
            queued,
            nccl::ncclResult_t::ncclSuccess | nccl::ncclResult_t::ncclInProgress
        ) {
            return Err(nccl_error(rank, call, queued, self.comm.last_error()));
        }
        // Non-blocking NCCL may still be queueing the operation: wait until it is on the stream.
        self.wait(operation, deadline, timeout, || Ok(true))?;
        let event =
            cudarc::driver::result::event::create(cu::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                .map_err(|e| cuda_error(rank, "cuEventCreate", e))?;
        // SAFETY: `event` was just created in the current context; `stream` is the caller's.
        let done = unsafe { cudarc::driver::result::event::record(event, stream) }
            .map_err(|e| cuda_error(rank, "cuEventRecord", e))
            .and_then(|()| {
                self.wait(operation, deadline, timeout, || {
                    // SAFETY: `event` is live until destroyed below.
                    match unsafe { cudarc::driver::result::event::query(event) } {
                        Ok(()) => Ok(true),
                        Err(DriverError(cu::CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
                        Err(e) => Err(cuda_error(rank, "cuEventQuery", e)),
                    }
                })
            });
        // SAFETY: created above, destroyed once; destroying a pending event is allowed.
        let _ = unsafe { cudarc::driver::result::event::destroy(event) };
        done
    }

    /// Polls until `finished` says so, failing on abort, on an asynchronous NCCL error (a peer
    /// failed, the network broke) or at the deadline.
    fn wait(
        &self,
        operation: Operation,
        deadline: Instant,
        timeout: Duration,
        mut finished: impl FnMut() -> Result<bool, CollectiveError>,
    ) -> Result<(), CollectiveError> {
        let rank = self.rank;
        loop {
            if self.abort.is_aborted() {
                return Err(CollectiveError::Aborted { rank, operation });
            }
            match self.comm.async_state() {
                None => return Err(CollectiveError::Aborted { rank, operation }),
                Some(nccl::ncclResult_t::ncclInProgress) => {}
                Some(nccl::ncclResult_t::ncclSuccess) => {
                    if finished()? {
                        return Ok(());
                    }
                }
                Some(code) => {
                    return Err(nccl_error(
                        rank,
                        "ncclCommGetAsyncError",
                        code,
                        self.comm.last_error(),
                    ));
                }
            }
            if Instant::now() >= deadline {
                self.comm.abort_comm();
                return Err(CollectiveError::Timeout {
                    rank,
                    operation,
                    peer: None,
                    timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The host-slice path: copy to the GPU, run on this collective's stream, copy back.
    fn run_host(&mut self, operation: Operation, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.ready(operation)?;
        if self.world_size == 1 || buf.is_empty() {
            return Ok(());
        }
        let rank = self.rank;
        let stream = self.stream.clone();
        let mut device = stream
            .clone_htod(buf)
            .map_err(|e| cuda_error(rank, "cuMemcpyHtoD", e))?;
        {
            let (ptr, _sync) = device.device_ptr_mut(&stream);
            self.run_device(operation, ptr, buf.len(), stream.cu_stream())?;
        }
        stream
            .memcpy_dtoh(&device, buf)
            .and_then(|()| stream.synchronize())
            .map_err(|e| cuda_error(rank, "cuMemcpyDtoH", e))
    }
}

impl Comm {
    fn lock(&self) -> MutexGuard<'_, Option<Handle>> {
        self.handle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `ncclCommAbort`, once; later calls and operations find no communicator.
    fn abort_comm(&self) {
        let Some(handle) = self.lock().take() else {
            return;
        };
        let _ = self.ctx.bind_to_thread();
        // SAFETY: the handle came from ncclCommInitRankConfig and was taken out of the mutex, so
        // no other call can use it after this one.
        let result = unsafe { nccl::ncclCommAbort(handle.0) };
        tracing::info!(rank = self.rank, ?result, "nccl communicator aborted");
    }

    /// `ncclCommGetAsyncError`; `None` once aborted.
    fn async_state(&self) -> Option<nccl::ncclResult_t> {
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
    fn last_error(&self) -> Option<String> {
        let guard = self.lock();
        let handle = guard.as_ref()?;
        // SAFETY: the handle is live; NCCL returns a NUL-terminated string it owns, copied here.
        let text = unsafe { nccl::ncclGetLastError(handle.0) };
        if text.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, valid until the next NCCL call on this thread.
        Some(
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        // Every operation waits for its completion, so nothing is in flight: aborting only frees
        // the resources, and unlike ncclCommDestroy it cannot wait on a dead peer.
        self.abort_comm();
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run_host(Operation::AllReduceSum, buf)
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        if root >= self.world_size {
            return Err(CollectiveError::InvalidRoot {
                rank: self.rank,
                root,
                world_size: self.world_size,
            });
        }
        self.run_host(Operation::Broadcast { root }, buf)
    }

    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.run_host(Operation::Barrier, &mut [0.0])
    }

    fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    fn all_reduce_sum_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        self.run_device(
            Operation::AllReduceSum,
            ptr,
            len,
            stream as usize as cu::CUstream,
        )
    }

    fn all_reduce_mean_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        self.run_device(
            Operation::AllReduceMean,
            ptr,
            len,
            stream as usize as cu::CUstream,
        )
    }

    fn implementation(&self) -> &'static str {
        "nccl"
    }
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

fn require_cuda() -> Result<(), CollectiveError> {
    // SAFETY: only tries to open the library.
    if unsafe { cu::is_culib_present() } {
        Ok(())
    } else {
        Err(CollectiveError::LibraryMissing { library: "cuda" })
    }
}

fn require_nccl() -> Result<(), CollectiveError> {
    // SAFETY: only tries to open the library.
    if unsafe { nccl::is_culib_present() } {
        Ok(())
    } else {
        Err(CollectiveError::LibraryMissing { library: "nccl" })
    }
}

fn nccl_error(
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

fn cuda_error(rank: usize, call: &'static str, source: DriverError) -> CollectiveError {
    CollectiveError::Cuda { rank, call, source }
}
