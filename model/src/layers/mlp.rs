//! The feed-forward part of a block: `fc2(gelu(fc1 x))` or SwiGLU `fc2(silu(fc1 x) * fc3 x)`.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;

use crate::config::{ArchVariant, FourMConfig};
use crate::init::InitRng;
use crate::layers::swiglu;
use crate::precision::linear;

/// `Mlp` / `GatedMlp` of ml-4m (`fm_utils.py:111-144`).
///
/// # Shapes
/// - input `[b, n, d]`, output `[b, n, d]`
#[derive(Module, Debug)]
pub struct Mlp {
    /// `d -> hidden`.
    pub fc1: Linear,
    /// `hidden -> d`.
    pub fc2: Linear,
    /// Gate `d -> hidden` (SwiGLU only).
    pub fc3: Option<Linear>,
}

impl Mlp {
    /// Initialises the MLP of `config` with xavier-uniform weights.
    pub fn new(config: &FourMConfig, rng: &mut InitRng) -> Self {
        let (d, h, bias) = (config.dim, config.mlp_hidden(), config.block_bias());
        let fc1 = rng.xavier_linear(d, h, bias);
        let fc2 = rng.xavier_linear(h, d, bias);
        let fc3 =
            (config.variant == ArchVariant::SwigluNobias).then(|| rng.xavier_linear(d, h, bias));
        Self { fc1, fc2, fc3 }
    }

    /// Applies the MLP.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match &self.fc3 {
            Some(fc3) => swiglu(linear(&self.fc1, x.clone()), linear(fc3, x)),
            None => gelu(linear(&self.fc1, x)),
        };
        linear(&self.fc2, hidden)
    }
}
