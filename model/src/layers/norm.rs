//! ml-4m's LayerNorm (`fm_utils.LayerNorm`, eps 1e-6): with `bias=False` the bias is a zero
//! buffer that still appears in the state dict.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::module::layer_norm;

use crate::config::NORM_EPS;
use crate::init::InitRng;

/// LayerNorm over the last dimension.
///
/// # Shapes
/// - input `[..., d]`, output `[..., d]`
#[derive(Module, Debug)]
pub struct Norm {
    /// Scale, initialised to 1.
    pub weight: Param<Tensor<1>>,
    /// Shift: trainable in `gelu` models, a zero buffer in `nobias` models.
    pub bias: Param<Tensor<1>>,
}

impl Norm {
    /// A LayerNorm of width `dim`; `trainable_bias = false` makes the bias a buffer.
    pub fn new(dim: usize, trainable_bias: bool, rng: &mut InitRng) -> Self {
        let bias = if trainable_bias {
            rng.constant([dim], 0.0)
        } else {
            rng.buffer([dim], move || vec![0.0; dim])
        };
        Self {
            weight: rng.constant([dim], 1.0),
            bias,
        }
    }

    /// Normalises `x` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), NORM_EPS)
    }
}
