//! One rank of an NCCL communicator as a [`Collective`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::result::event;
use cudarc::driver::sys as cu;
use cudarc::driver::{CudaContext, CudaStream, DevicePtrMut, DriverError};
use cudarc::nccl::sys as nccl;

use super::NcclUniqueId;
use super::comm::{Comm, cuda_error, nccl_error, require_cuda, require_nccl};
use crate::{AbortHandle, Collective, CollectiveError, DeviceMemory, Operation, padded_len};

/// How often a waiting operation polls NCCL and the stream.
const POLL: Duration = Duration::from_micros(50);

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
/// small buffers); the worker hands [`Collective::all_reduce_sum_device`] the flat gradient in
/// the GPU memory where the backend computed it ([`Collective::device_memory`] names the device).
/// [`Collective::reduce_scatter_sum_device`] and [`Collective::all_gather_device`] serve sharded
/// optimizer state.
/// Unlike the CPU implementations, a world of one still goes through NCCL (a single-rank
/// communicator), so that a one-GPU machine exercises the whole path.
#[derive(Debug)]
pub struct NcclCollective {
    rank: usize,
    world_size: usize,
    /// The CUDA device (ordinal) of the communicator.
    device: usize,
    comm: Arc<Comm>,
    /// The stream of the host-slice operations.
    stream: Arc<CudaStream>,
    config: NcclConfig,
    abort: AbortHandle,
    broken: Option<Operation>,
}

impl NcclCollective {
    /// The number of CUDA devices; errors if the CUDA driver or NCCL cannot be loaded.
    pub fn device_count() -> Result<usize, CollectiveError> {
        require_nccl()?;
        Self::cuda_device_count()
    }

    /// The number of CUDA devices, NCCL or not; errors if the CUDA driver cannot be loaded
    /// (where touching CUDA would otherwise panic inside `cudarc`).
    pub fn cuda_device_count() -> Result<usize, CollectiveError> {
        require_cuda()?;
        let count =
            CudaContext::device_count().map_err(|e| cuda_error(0, "cuDeviceGetCount", e))?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Joins the communicator identified by `id` as `rank` of `world_size`, on GPU `device`.
    /// Every rank must call it; it returns once all have, or fails after `config.init_timeout`
    /// or when `abort` fires.
    pub fn new(
        id: &NcclUniqueId,
        rank: usize,
        world_size: usize,
        device: usize,
        config: &NcclConfig,
        abort: AbortHandle,
    ) -> Result<Self, CollectiveError> {
        if rank >= world_size {
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
        // Retains the device's primary context and makes it current on this thread.
        let ctx = CudaContext::new(device)
            .map_err(|e| cuda_error(rank, "cuDevicePrimaryCtxRetain", e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| cuda_error(rank, "cuStreamCreate", e))?;
        let comm = Arc::new(Comm::init(ctx, id, rank, world_size)?);
        let weak = Arc::downgrade(&comm);
        abort.on_abort(move || {
            if let Some(comm) = weak.upgrade() {
                comm.abort();
            }
        });
        let this = Self {
            rank,
            world_size,
            device,
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
        let rank = self.rank;
        if self.abort.is_aborted() {
            return Err(CollectiveError::Aborted { rank, operation });
        }
        match self.broken {
            Some(failed) => Err(CollectiveError::Broken {
                rank,
                operation,
                failed,
            }),
            None => Ok(()),
        }
    }

    /// Runs one NCCL collective on `len` floats at `ptr`, on `stream`, and waits until it is done;
    /// for reduce-scatter and all-gather `len` is already padded to whole shards.
    fn run_device(
        &mut self,
        operation: Operation,
        ptr: u64,
        len: usize,
        stream: cu::CUstream,
    ) -> Result<(), CollectiveError> {
        self.ready(operation)?;
        if len == 0 {
            return Ok(());
        }
        let result = self.enqueue_and_wait(operation, ptr, len, stream);
        if result.is_err() {
            self.broken = Some(operation);
            self.comm.abort();
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
        let timeout = self.config.op_timeout;
        let deadline = Instant::now() + timeout;
        self.comm
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_error(rank, "cuCtxSetCurrent", e))?;
        if !self.comm.enqueue(operation, ptr, len, stream)? {
            return Err(CollectiveError::Aborted { rank, operation });
        }
        // Non-blocking NCCL may still be queueing the operation: wait until it is on the stream,
        // then until the stream has run it.
        self.wait(operation, deadline, timeout, || Ok(true))?;
        let done = event::create(cu::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(|e| cuda_error(rank, "cuEventCreate", e))?;
        // SAFETY: `done` was just created in the current context; `stream` is the caller's.
        let result = unsafe { event::record(done, stream) }
            .map_err(|e| cuda_error(rank, "cuEventRecord", e))
            .and_then(|()| {
                self.wait(operation, deadline, timeout, || {
                    // SAFETY: `done` is live until destroyed below.
                    match unsafe { event::query(done) } {
                        Ok(()) => Ok(true),
                        Err(DriverError(cu::CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
                        Err(e) => Err(cuda_error(rank, "cuEventQuery", e)),
                    }
                })
            });
        // SAFETY: created above and destroyed once; destroying a pending event is allowed.
        let _ = unsafe { event::destroy(done) };
        result
    }

    /// Polls until `finished` says so, failing on abort, on an asynchronous NCCL error (a peer
    /// failed, the network broke) or at the deadline, where it aborts the communicator.
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
                    let detail = self.comm.last_error();
                    return Err(nccl_error(rank, "ncclCommGetAsyncError", code, detail));
                }
            }
            if Instant::now() >= deadline {
                self.comm.abort();
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

    /// The length of the device buffer that `operation` needs for `len` elements: reduce-scatter
    /// and all-gather run on whole shards, the others on the buffer as it is.
    fn device_len(&self, operation: Operation, len: usize) -> usize {
        match operation {
            Operation::ReduceScatterSum | Operation::AllGather => padded_len(len, self.world_size),
            _ => len,
        }
    }

    /// The host-slice path: copy to the GPU (zero-padded to whole shards where the operation
    /// needs them), run on this collective's stream, copy the first `buf.len()` elements back.
    fn run_host(&mut self, operation: Operation, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.ready(operation)?;
        if buf.is_empty() {
            return Ok(());
        }
        let rank = self.rank;
        let len = buf.len();
        let device_len = self.device_len(operation, len);
        let stream = self.stream.clone();
        // Kept until the copy back, like `buf`.
        let padded: Vec<f32>;
        let host: &[f32] = if device_len == len {
            buf
        } else {
            padded = buf
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0.0, device_len - len))
                .collect();
            &padded
        };
        let mut device = stream
            .clone_htod(host)
            .map_err(|e| cuda_error(rank, "cuMemcpyHtoD", e))?;
        {
            let (ptr, _sync) = device.device_ptr_mut(&stream);
            self.run_device(operation, ptr, device_len, stream.cu_stream())?;
        }
        stream
            .memcpy_dtoh(&device.slice(..len), buf)
            .and_then(|()| stream.synchronize())
            .map_err(|e| cuda_error(rank, "cuMemcpyDtoH", e))
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

    fn reduce_scatter_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run_host(Operation::ReduceScatterSum, buf)
    }

    fn all_gather(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run_host(Operation::AllGather, buf)
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

    fn device_memory(&self) -> Option<DeviceMemory> {
        Some(DeviceMemory::Cuda {
            ordinal: self.device,
        })
    }

    fn all_reduce_sum_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let stream = stream as usize as cu::CUstream;
        self.run_device(Operation::AllReduceSum, ptr, len, stream)
    }

    fn all_reduce_mean_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let stream = stream as usize as cu::CUstream;
        self.run_device(Operation::AllReduceMean, ptr, len, stream)
    }

    fn reduce_scatter_sum_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let stream = stream as usize as cu::CUstream;
        let padded = padded_len(len, self.world_size);
        self.run_device(Operation::ReduceScatterSum, ptr, padded, stream)
    }

    fn all_gather_device(
        &mut self,
        ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CollectiveError> {
        let stream = stream as usize as cu::CUstream;
        let padded = padded_len(len, self.world_size);
        self.run_device(Operation::AllGather, ptr, padded, stream)
    }

    fn implementation(&self) -> &'static str {
        "nccl"
    }
}
