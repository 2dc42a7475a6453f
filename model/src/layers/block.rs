//! Pre-norm transformer blocks: the encoder `Block` and the `DecoderBlock` with cross-attention
//! (`fm_utils.py:310-366`).

use burn::module::Module;
use burn::tensor::Tensor;

use crate::config::FourMConfig;
use crate::init::InitRng;
use crate::layers::{Attention, CrossAttention, Mlp, Norm};

/// Encoder block: `x += attn(norm1 x)`, `x += mlp(norm2 x)`.
///
/// # Shapes
/// - `x`: `[b, n, d]`, `bias`: `[b, 1, n, n]`; output `[b, n, d]`
#[derive(Module, Debug)]
pub struct Block {
    /// Norm before attention.
    pub norm1: Norm,
    /// Self-attention.
    pub attn: Attention,
    /// Norm before the MLP.
    pub norm2: Norm,
    /// Feed-forward.
    pub mlp: Mlp,
}

impl Block {
    /// An initialised block.
    pub fn new(config: &FourMConfig, rng: &mut InitRng) -> Self {
        let bias = config.norm_bias_trainable();
        Self {
            norm1: Norm::new(config.dim, bias, rng),
            attn: Attention::new(config, rng),
            norm2: Norm::new(config.dim, bias, rng),
            mlp: Mlp::new(config, rng),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), bias);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Decoder block: self-attention, cross-attention to the normalised context, MLP; each pre-norm.
///
/// # Shapes
/// - `x`: `[b, n, d]`, `context`: `[b, m, d]`, `self_bias`: `[b, 1, n, n]`,
///   `cross_bias`: `[b, 1, 1, m]`; output `[b, n, d]`
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// Norm before self-attention.
    pub norm1: Norm,
    /// Self-attention among decoder tokens.
    pub self_attn: Attention,
    /// Norm of the queries before cross-attention.
    pub query_norm: Norm,
    /// Norm of the context before cross-attention (applied in every block).
    pub context_norm: Norm,
    /// Cross-attention to the encoder context.
    pub cross_attn: CrossAttention,
    /// Norm before the MLP.
    pub norm2: Norm,
    /// Feed-forward.
    pub mlp: Mlp,
}

impl DecoderBlock {
    /// An initialised decoder block.
    pub fn new(config: &FourMConfig, rng: &mut InitRng) -> Self {
        let bias = config.norm_bias_trainable();
        Self {
            norm1: Norm::new(config.dim, bias, rng),
            self_attn: Attention::new(config, rng),
            query_norm: Norm::new(config.dim, bias, rng),
            context_norm: Norm::new(config.dim, bias, rng),
            cross_attn: CrossAttention::new(config, rng),
            norm2: Norm::new(config.dim, bias, rng),
            mlp: Mlp::new(config, rng),
        }
    }

    /// Applies the block.
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Tensor<3>,
        self_bias: Option<Tensor<4>>,
        cross_bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.norm1.forward(x), self_bias);
        let ctx = self.context_norm.forward(context);
        let x = x.clone()
            + self
                .cross_attn
                .forward(self.query_norm.forward(x), ctx, cross_bias);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}
