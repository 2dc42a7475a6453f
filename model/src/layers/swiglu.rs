//! SwiGLU's gate `silu(a) · b` as one backend operation (ml-4m `GatedMlp.forward`,
//! `fm_utils.py`: `self.act(self.fc1(x)) * self.fc2(x)`).
//!
//! burn evaluates SiLU as a sigmoid and a product, then the gate as another product, each an
//! autodiff node keeping its input. Here the gate is one extension operation: on the CPU backend
//! (Flex) one vectorised pass ([`kernels::swiglu`](super::kernels::swiglu)); under autodiff one
//! node keeping `a` and `b`, whose backward is one pass too. Other backends take burn's
//! `silu(a) * b`.
//!
//! # Shapes
//! - `a`, `b`: the same shape; output that shape.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, activation};

use super::kernels::{self, f32_slice, flex_tensor, takes_host_kernel};

/// `silu(a) · b`.
pub fn swiglu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if takes_host_kernel(&a) && a.dims() == b.dims() {
        Tensor::from_dispatch(<Dispatch as SwigluOps>::swiglu(
            a.into_dispatch(),
            b.into_dispatch(),
        ))
    } else {
        activation::silu(a) * b
    }
}

/// The extension operations (routed to Flex and to autodiff over Flex).
#[backend_extension(Flex, Autodiff)]
pub trait SwigluOps: Backend {
    /// `silu(a) · b`.
    fn swiglu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradients of `silu(a) · b` for `a` and `b` under the output gradient `g`:
    /// `g · b · σ(a) · (1 + a · (1 - σ(a)))` and `g · a · σ(a)`.
    fn swiglu_backward(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let s = Self::sigmoid(a.clone());
        let silu = Self::float_mul(a, s.clone());
        let one_minus = Self::float_add_scalar(Self::float_neg(s.clone()), 1.0.into());
        let slope = Self::float_add(s, Self::float_mul(silu.clone(), one_minus));
        let da = Self::float_mul(Self::float_mul(g.clone(), b), slope);
        let db = Self::float_mul(g, silu);
        (da, db)
    }
}

impl SwigluOps for Flex {
    fn swiglu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = a.shape();
        let (a, b) = (a.into_data(), b.into_data());
        let mut out = vec![0.0f32; a.num_elements()];
        kernels::swiglu::forward(f32_slice(&a), f32_slice(&b), &mut out);
        flex_tensor(out, shape)
    }

    fn swiglu_backward(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = a.shape();
        let (a, b, g) = (a.into_data(), b.into_data(), g.into_data());
        let n = a.num_elements();
        let (mut da, mut db) = (vec![0.0f32; n], vec![0.0f32; n]);
        kernels::swiglu::backward(
            f32_slice(&a),
            f32_slice(&b),
            f32_slice(&g),
            &mut da,
            &mut db,
        );
        (flex_tensor(da, shape.clone()), flex_tensor(db, shape))
    }
}

/// Backward of the gate from its inputs.
#[derive(Debug)]
struct SwigluBackward;

impl<B: Backend + SwigluOps> Backward<B, 2> for SwigluBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        let g = grads.consume::<B>(&ops.node);
        let (da, db) = B::swiglu_backward(a, b, g);
        let [pa, pb] = ops.parents;
        if let Some(node) = pa {
            grads.register::<B>(node.id, da);
        }
        if let Some(node) = pb {
            grads.register::<B>(node.id, db);
        }
    }
}

impl<B: Backend + SwigluOps, C: CheckpointStrategy> SwigluOps for Autodiff<B, C> {
    fn swiglu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (a, b) = (a.into_primitive(), b.into_primitive());
                let out = B::swiglu(a.clone(), b.clone());
                prep.finish((a, b), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::swiglu(a.into_primitive(), b.into_primitive()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::layers::kernels::assert_close;

    #[test]
    fn forward_and_gradients_match_burns_silu() {
        let device = Device::flex().autodiff();
        let a = Tensor::<3>::random([2, 5, 37], Distribution::Normal(0.0, 3.0), &device);
        let b = Tensor::<3>::random([2, 5, 37], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<3>::random([2, 5, 37], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: fn(Tensor<3>, Tensor<3>) -> Tensor<3>| {
            let (a, b) = (a.clone().require_grad(), b.clone().require_grad());
            let y = f(a.clone(), b.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            (
                y.inner(),
                a.grad(&grads).expect("da"),
                b.grad(&grads).expect("db"),
            )
        };
        let ours = run(swiglu);
        let burns = run(|a, b| activation::silu(a) * b);
        assert_close(ours.0, burns.0);
        assert_close(ours.1, burns.1);
        assert_close(ours.2, burns.2);
    }
}
