//! The NCCL collective of a generation (`worker.collective = "nccl"`, feature `cuda`): rank 0
//! creates the unique id and publishes it through the coordinator's rendezvous; the other ranks
//! wait for it there; then every rank joins the communicator on its GPU. The step's all-reduce
//! goes through the host-slice path of the `Collective` trait (a copy to the GPU and back).

use fourm_collective::{AbortHandle, Collective, CollectiveError};

use crate::error::WorkerError;
use crate::generation::Worker;

/// The collective, a collective failure (the generation then ends), or a worker error.
pub(crate) type Connected = Result<Box<dyn Collective>, CollectiveError>;

/// Joins generation `g`'s NCCL communicator as `rank` of `world`.
#[cfg(feature = "cuda")]
pub(crate) fn connect(
    worker: &Worker,
    g: u64,
    rank: u32,
    world: u32,
    abort: AbortHandle,
) -> Result<Connected, WorkerError> {
    use std::time::Instant;

    use fourm_collective::{NcclCollective, NcclConfig, NcclUniqueId};
    use fourm_proto::v1 as pb;

    let config = NcclConfig::default();
    let request = |id: Vec<u8>, wait_ms: u32| pb::RendezvousRequest {
        worker_id: worker.id.clone(),
        generation: g,
        nccl_unique_id: id,
        wait_ms,
    };
    let id = if rank == 0 {
        let id = match NcclUniqueId::new() {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        };
        worker
            .runtime
            .block_on(worker.client.rendezvous(request(id.to_bytes(), 0)))?;
        id
    } else {
        let deadline = Instant::now() + config.init_timeout;
        loop {
            let reply = worker
                .runtime
                .block_on(worker.client.rendezvous(request(Vec::new(), 10_000)))?;
            if !reply.nccl_unique_id.is_empty() {
                match NcclUniqueId::from_bytes(&reply.nccl_unique_id) {
                    Ok(id) => break id,
                    Err(e) => return Ok(Err(e)),
                }
            }
            if let Some(reason) = worker.control.aborted() {
                return Err(WorkerError::setup(format!(
                    "generation {g} ended before rank 0 published its NCCL id: {reason}"
                )));
            }
            if Instant::now() > deadline {
                return Err(WorkerError::setup(format!(
                    "rank 0 of generation {g} did not publish its NCCL id within {:?}",
                    config.init_timeout
                )));
            }
        }
    };
    Ok(NcclCollective::new(
        &id,
        rank as usize,
        world as usize,
        worker.config.worker.device_index,
        &config,
        abort,
    )
    .map(|c| Box::new(c) as Box<dyn Collective>))
}

/// Without the `cuda` feature there is no NCCL.
#[cfg(not(feature = "cuda"))]
pub(crate) fn connect(
    _worker: &Worker,
    _g: u64,
    _rank: u32,
    _world: u32,
    _abort: AbortHandle,
) -> Result<Connected, WorkerError> {
    Err(WorkerError::setup(
        "worker.collective = \"nccl\" needs a worker built with --features cuda",
    ))
}

/// The name of CUDA device `index` (to look up its peak for the MFU estimate).
#[cfg(feature = "cuda")]
pub(crate) fn device_name(index: usize) -> Option<String> {
    fourm_collective::NcclCollective::cuda_device_count()
        .ok()
        .filter(|&n| index < n)?;
    cudarc::driver::CudaContext::new(index)
        .ok()
        .and_then(|ctx| ctx.name().ok())
}

/// Without the `cuda` feature there is no CUDA device.
#[cfg(not(feature = "cuda"))]
pub(crate) fn device_name(_index: usize) -> Option<String> {
    None
}
