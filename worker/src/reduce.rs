//! The flat gradient's all-reduce, in the memory where the backend computed it.
//!
//! The step hands the whole gradient to the collective in one call:
//!
//! * a collective that takes the gradient's memory ([`Collective::device_memory`]: NCCL for a
//!   CUDA tensor) is given the tensor's own buffer — its device address, once the backend's
//!   queue has run — and sums it in place;
//! * on the CPU backend the tensor's host storage is the buffer: the host collectives (the TCP
//!   ring, the in-process one) sum it in place as a slice, with no copy;
//! * otherwise (a GPU tensor with a host collective) the gradient is copied to the host, reduced
//!   there and copied back; [`Reduction::host_elements`] says so.

use burn::backend::{DispatchDevice, Flex};
use burn::tensor::{Device, Tensor};
use fourm_collective::{Collective, CollectiveError, DeviceMemory};

use crate::step::{StepError, host_tensor, host_values};

/// What the reduction moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reduction {
    /// Gradient elements copied between the device and host memory (0 when the collective
    /// worked on the gradient's own buffer).
    pub host_elements: usize,
}

/// Where `device` keeps its tensors, as a collective names memory (`None`: a backend whose
/// buffers no collective takes).
pub(crate) fn memory_of(device: &Device) -> Option<DeviceMemory> {
    match device.as_dispatch().clone().inner() {
        DispatchDevice::Flex(_) => Some(DeviceMemory::Host),
        #[cfg(feature = "cuda")]
        DispatchDevice::Cube(burn::backend::CubeDevice::Cuda(d)) => {
            Some(DeviceMemory::Cuda { ordinal: d.index })
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Sums the flat `f32` gradient `grads` over the ranks, in place where it lives.
pub(crate) fn all_reduce_sum(
    collective: &mut dyn Collective,
    grads: Tensor<1>,
) -> Result<(Tensor<1>, Reduction), StepError> {
    let memory = memory_of(&grads.device());
    let takes = collective.device_memory();
    if memory.is_some() && takes == memory {
        let grads = match memory {
            Some(DeviceMemory::Host) => with_host_storage(grads, |buf| {
                collective.all_reduce_sum_device(buf.as_mut_ptr() as u64, buf.len(), 0)
            })?,
            _ => cuda::all_reduce_sum(collective, grads)?,
        };
        return Ok((grads, Reduction::default()));
    }
    if collective.world_size() == 1 {
        return Ok((grads, Reduction::default()));
    }
    if memory == Some(DeviceMemory::Host) {
        let grads = with_host_storage(grads, |buf| collective.all_reduce_sum(buf))?;
        return Ok((grads, Reduction::default()));
    }
    // A device the collective cannot reach: through the host.
    let device = grads.device();
    let n = grads.dims()[0];
    let mut values = host_values(grads, "the gradient")?;
    collective.all_reduce_sum(&mut values)?;
    let grads = host_tensor(values, n, &device);
    Ok((
        grads,
        Reduction {
            host_elements: 2 * n,
        },
    ))
}

/// Runs `f` on the host storage of a CPU-backend tensor (copied first only if another tensor
/// shares it or it is a strided view), then wraps the storage back into a tensor.
fn with_host_storage(
    grads: Tensor<1>,
    f: impl FnOnce(&mut [f32]) -> Result<(), CollectiveError>,
) -> Result<Tensor<1>, StepError> {
    let n = grads.dims()[0];
    let mut t = grads
        .try_into_primitive::<Flex>()
        .map_err(|e| StepError::device(format!("the gradient is not a CPU tensor: {e:?}")))?;
    if !t.is_contiguous() || t.layout().start_offset() != 0 {
        t = t.to_contiguous();
    }
    f(&mut t.storage_mut::<f32>()[..n])?;
    Ok(Tensor::from_primitive::<Flex>(t))
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod cuda {
    //! The address of a gradient in GPU memory under burn's fused cubecl backend.

    use burn::tensor::Tensor;
    use burn_cubecl::cubecl::cuda::CudaRuntime;
    use burn_cubecl::{Cube, CubeBackend};
    use cubecl_runtime::runtime::Runtime;
    use fourm_collective::Collective;

    use crate::step::StepError;

    /// Hands the buffer of `grads` (a CUDA tensor) to `collective`'s device all-reduce.
    pub(super) fn all_reduce_sum(
        collective: &mut dyn Collective,
        grads: Tensor<1>,
    ) -> Result<Tensor<1>, StepError> {
        let n = grads.dims()[0];
        let fusion = grads.clone().try_into_primitive::<Cube>().map_err(|e| {
            StepError::device(format!("the gradient is not a cubecl tensor: {e:?}"))
        })?;
        // Materialises the fused operations that produce the gradient; the tensor then owns a
        // buffer of its own, contiguous (the flat gradient is one concatenation).
        let tensor = fusion
            .client
            .clone()
            .resolve_tensor_float::<CubeBackend>(fusion);
        // Everything queued that writes the buffer has run once this returns.
        burn_cubecl::cubecl::future::block_on(tensor.client.sync())
            .map_err(|e| StepError::device(format!("synchronising the device: {e:?}")))?;
        let resource = tensor
            .client
            .get_resource::<<CudaRuntime as Runtime>::Server>(tensor.handle.clone())
            .map_err(|e| StepError::device(format!("the gradient's device buffer: {e:?}")))?;
        let (ptr, size) = (resource.resource().ptr, resource.resource().size);
        if size < (n * std::mem::size_of::<f32>()) as u64 {
            return Err(StepError::device(format!(
                "the gradient's buffer holds {size} bytes, not {n} f32s"
            )));
        }
        // NCCL runs on its own stream and returns once the sum is in place; the device queue is
        // idle (synchronised above), so stream 0 orders nothing further.
        collective.all_reduce_sum_device(ptr, n, 0)?;
        drop(resource);
        Ok(grads)
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use burn::tensor::Tensor;
    use fourm_collective::Collective;

    use crate::step::StepError;

    /// Without the `cuda` feature no tensor lives in CUDA memory.
    pub(super) fn all_reduce_sum(
        _: &mut dyn Collective,
        _: Tensor<1>,
    ) -> Result<Tensor<1>, StepError> {
        Err(StepError::device(
            "a CUDA gradient in a worker built without --features cuda",
        ))
    }
}
