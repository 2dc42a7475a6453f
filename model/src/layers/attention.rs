//! Multi-head self- and cross-attention (`Attention`, `CrossAttention` and their qk-norm variants
//! in `fm_utils.py`).
//!
//! Masks are passed as additive biases of `0` (may attend) or `-f32::MAX` (may not). Added to a
//! score of ordinary magnitude, `-f32::MAX` rounds to `-f32::MAX` exactly, which is what ml-4m's
//! `masked_fill(mask, -finfo.max)` produces: a fully masked row gives a uniform softmax, not NaN.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::config::FourMConfig;
use crate::init::{InitRng, xavier_bound};
use crate::layers::kernels::takes_host_kernel;
use crate::layers::{Norm, softmax_last};
use crate::precision::{linear, matmul};

/// Additive attention bias value for "may not attend".
pub const MASKED: f32 = -f32::MAX;

/// The per-head LayerNorm of qk-norm models, or `None`.
fn head_norm(config: &FourMConfig, rng: &mut InitRng) -> Option<Norm> {
    config
        .qk_norm
        .then(|| Norm::new(config.head_dim(), config.norm_bias_trainable(), rng))
}

/// Self-attention with a fused `[q | k | v]` projection.
///
/// # Shapes
/// - `x`: `[b, n, d]`; `bias`: `[b, 1, n, n]` (broadcast over heads); output `[b, n, d]`
#[derive(Module, Debug)]
pub struct Attention {
    /// `d -> 3d`, output laid out `[q (all heads) | k | v]`.
    pub qkv: Linear,
    /// Output projection `d -> d`.
    pub proj: Linear,
    /// Per-head LayerNorm on queries (qk-norm models).
    pub q_norm: Option<Norm>,
    /// Per-head LayerNorm on keys (qk-norm models).
    pub k_norm: Option<Norm>,
    #[module(skip)]
    num_heads: usize,
}

impl Attention {
    /// Initialised as ml-4m: `qkv` uniform with the per-slice xavier bound, `proj` xavier.
    pub fn new(config: &FourMConfig, rng: &mut InitRng) -> Self {
        let d = config.dim;
        let bias = config.block_bias();
        Self {
            qkv: rng.linear(d, 3 * d, bias, xavier_bound(d, d)),
            proj: rng.xavier_linear(d, d, bias),
            q_norm: head_norm(config, rng),
            k_norm: head_norm(config, rng),
            num_heads: config.num_heads,
        }
    }

    /// Attends `x` to itself.
    pub fn forward(&self, x: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let mut qkv = linear(&self.qkv, x).chunk(3, 2);
        let v = split_heads(qkv.pop().expect("v"), self.num_heads);
        let k = split_heads(qkv.pop().expect("k"), self.num_heads);
        let q = split_heads(qkv.pop().expect("q"), self.num_heads);
        let out = attend(q, k, v, bias, self.q_norm.as_ref(), self.k_norm.as_ref());
        linear(&self.proj, out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// Cross-attention from queries `x` to a context.
///
/// # Shapes
/// - `x`: `[b, n, d]`, `context`: `[b, m, d]`, `bias`: `[b, 1, 1, m]`; output `[b, n, d]`
#[derive(Module, Debug)]
pub struct CrossAttention {
    /// Query projection `d -> d`.
    pub q: Linear,
    /// Context projection `d -> 2d`, laid out `[k | v]`.
    pub kv: Linear,
    /// Output projection `d -> d`.
    pub proj: Linear,
    /// Per-head LayerNorm on queries (qk-norm models).
    pub q_norm: Option<Norm>,
    /// Per-head LayerNorm on keys (qk-norm models).
    pub k_norm: Option<Norm>,
    #[module(skip)]
    num_heads: usize,
}

impl CrossAttention {
    /// Initialised as ml-4m: `kv` uniform with the per-slice xavier bound, others xavier.
    pub fn new(config: &FourMConfig, rng: &mut InitRng) -> Self {
        let d = config.dim;
        let bias = config.block_bias();
        Self {
            q: rng.xavier_linear(d, d, bias),
            kv: rng.linear(d, 2 * d, bias, xavier_bound(d, d)),
            proj: rng.xavier_linear(d, d, bias),
            q_norm: head_norm(config, rng),
            k_norm: head_norm(config, rng),
            num_heads: config.num_heads,
        }
    }

    /// Attends `x` to `context` (already normalised by the caller).
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let q = split_heads(linear(&self.q, x), self.num_heads);
        let mut kv = linear(&self.kv, context).chunk(2, 2);
        let v = split_heads(kv.pop().expect("v"), self.num_heads);
        let k = split_heads(kv.pop().expect("k"), self.num_heads);
        let out = attend(q, k, v, bias, self.q_norm.as_ref(), self.k_norm.as_ref());
        linear(&self.proj, out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// `[b, n, h·dh] -> [b, h, n, dh]`.
pub(crate) fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, n, d] = x.dims();
    x.reshape([b, n, heads, d / heads]).swap_dims(1, 2)
}

/// `softmax(q·kᵀ·scale + bias)·v` per head, `[b, h, n, dh]`.
///
/// Three routes to the same function: on the CPU backend, matrix products around the fused
/// softmax ([`softmax_last`]); on other backends without autodiff (generation on a GPU), burn's
/// fused attention operation (flash attention on cubecl), the mask as its additive bias; on other
/// backends under autodiff, the composed form, which is what burn's autodiff runs for its
/// attention operation too (burn-autodiff 0.22.1 `ops/module.rs`: `attention_fallback`).
pub(crate) fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<4>>,
    q_norm: Option<&Norm>,
    k_norm: Option<&Norm>,
) -> Tensor<4> {
    let q = match q_norm {
        Some(norm) => norm.forward(q),
        None => q,
    };
    let k = match k_norm {
        Some(norm) => norm.forward(k),
        None => k,
    };
    if takes_host_kernel(&q) || q.is_autodiff() {
        composed(q, k, v, bias)
    } else {
        fused(q, k, v, bias)
    }
}

/// Attention as matrix products around a softmax.
fn composed(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>) -> Tensor<4> {
    let head_dim = q.dims()[3];
    // Scaling q (`[b, h, n, dh]`) rather than the scores (`[b, h, n, m]`) is the cheaper
    // order; it changes the result by rounding only.
    let scale = (head_dim as f64).powf(-0.5);
    let mut scores = matmul(q.mul_scalar(scale), k.swap_dims(2, 3));
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    matmul(softmax_last(scores), v)
}

/// burn's attention operation (scale `1/√dh`), the `[b or 1, 1, n, m]` bias broadcast over
/// batch and heads.
fn fused(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>) -> Tensor<4> {
    let [b, h, n, _] = q.dims();
    let m = k.dims()[2];
    let bias = bias.map(|t| t.expand([b, h, n, m]));
    attention(q, k, v, None, bias, AttentionModuleOptions::default())
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::layers::kernels::assert_close;

    #[test]
    fn burns_attention_operation_agrees_with_the_composed_form() {
        let device = Device::flex();
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<4>::random([2, 3, 5, 8], normal, &device);
        let k = Tensor::<4>::random([2, 3, 7, 8], normal, &device);
        let v = Tensor::<4>::random([2, 3, 7, 8], normal, &device);
        let bias = Tensor::<4>::random([2, 1, 5, 7], Distribution::Default, &device)
            .lower_elem(0.3)
            .float()
            .mul_scalar(MASKED);
        for bias in [None, Some(bias)] {
            let a = composed(q.clone(), k.clone(), v.clone(), bias.clone());
            assert_close(fused(q.clone(), k.clone(), v.clone(), bias), a);
        }
    }
}
