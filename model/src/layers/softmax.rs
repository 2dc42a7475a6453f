//! Softmax over the last dimension as one backend operation (`torch.softmax(x, dim=-1)` in
//! ml-4m's attention, `fm_utils.py` `Attention.forward`).
//!
//! burn composes softmax from max, subtract, exp, sum and divide, and autodiff records each of
//! them. Here it is one extension operation: on the CPU backend (Flex) a single pass per row over
//! host memory with a vectorised exponential ([`kernels::softmax`](super::kernels::softmax)); under
//! autodiff one graph node whose backward is `y ⊙ (g - Σ g ⊙ y)` from the saved output. Other
//! backends (CUDA) take burn's softmax.
//!
//! # Shapes
//! - any `[…, n]` in, the same shape out; rows of `n` sum to 1.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, activation};

use super::kernels::softmax::softmax_rows;
use super::kernels::{f32_slice, flex_tensor, takes_host_kernel};

/// Softmax of `x` over its last dimension.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if takes_host_kernel(&x) {
        Tensor::from_dispatch(<Dispatch as SoftmaxOps>::softmax_last(x.into_dispatch()))
    } else {
        activation::softmax(x, D - 1)
    }
}

/// The extension operation (routed to Flex and to autodiff over Flex).
#[backend_extension(Flex, Autodiff)]
pub trait SoftmaxOps: Backend {
    /// Softmax over the last dimension.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SoftmaxOps for Flex {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = x.shape();
        let row = shape.as_slice().last().copied().unwrap_or(1);
        let data = x.into_data();
        let input = f32_slice(&data);
        let mut out = vec![0.0f32; input.len()];
        softmax_rows(input, &mut out, row);
        flex_tensor(out, shape)
    }
}

/// Backward of softmax from its output `y`: `dx = y ⊙ (g - Σ_last g ⊙ y)`.
#[derive(Debug)]
struct SoftmaxBackward;

impl<B: Backend> Backward<B, 1> for SoftmaxBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        let last = y.shape().num_dims() - 1;
        unary::<B, _>(ops.parents, ops.node, grads, |g| {
            let dot = B::float_sum_dim(B::float_mul(g.clone(), y.clone()), last);
            B::float_mul(y, B::float_sub(g, dot))
        });
    }
}

impl<B: Backend + SoftmaxOps, C: CheckpointStrategy> SoftmaxOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::softmax_last(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_last(x.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::layers::kernels::assert_close;

    #[test]
    fn forward_and_gradient_match_burns_softmax() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::random([2, 5, 19], Distribution::Normal(0.0, 3.0), &device);
        let w = Tensor::<3>::random([2, 5, 19], Distribution::Normal(0.0, 1.0), &device);
        let grad_of = |f: fn(Tensor<3>) -> Tensor<3>| {
            let x = x.clone().detach().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (y.inner(), x.grad(&grads).expect("gradient"))
        };
        let (y_ours, g_ours) = grad_of(softmax_last);
        let (y_burn, g_burn) = grad_of(|x| activation::softmax(x, 2));
        assert_close(y_ours, y_burn);
        assert_close(g_ours, g_burn);
    }

    #[test]
    fn plain_flex_tensors_take_the_kernel() {
        let x = Tensor::<3>::random([3, 4, 40], Distribution::Default, &Device::flex());
        assert_close(softmax_last(x.clone()), activation::softmax(x, 2));
    }
}
