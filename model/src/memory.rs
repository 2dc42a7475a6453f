//! Memory of data-parallel training, per rank, computed from the sizes alone (nothing is built):
//! what `fourm plan-memory` prints so that a configuration can be chosen before renting GPUs.
//!
//! - parameters: every tensor of the model (trainable weights and the buffers: sin-cos tables,
//!   zero LayerNorm biases), fp32; with bf16 autocast also a bf16 copy of the weights.
//! - gradients: the flat fp32 gradient the step accumulates and all-reduces (whole on every rank:
//!   ZeRO-1 shards the optimizer state, not the gradient).
//! - optimizer: AdamW's two fp32 moments and its one-byte decay mask, for this rank's shard of
//!   the flat vector (`ceil(P / world)` elements) or all of it.
//! - activations: what autograd keeps for the backward pass of one micro-batch, estimated per
//!   block from the tensors a pre-norm block saves (norms, qkv, scores and probabilities, MLP),
//!   plus the decoder's logits. An estimate: the backend may keep more or fewer intermediates.

use crate::config::{ArchVariant, FourMConfig, SEQ_POS_EMB_ROWS};
use crate::modality::{Modalities, ModalityKind};

/// Scalars of a model: trained parameters and buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// Trainable scalars (the flat vector the optimizer updates).
    pub trainable: usize,
    /// Scalars of buffers (saved with the model, never trained).
    pub buffers: usize,
    /// Trainable scalars of the per-modality embeddings (part of `trainable`; ml-4m's published
    /// sizes leave them out).
    pub embeddings: usize,
}

impl ParamCount {
    fn add(&mut self, n: usize, trainable: bool) {
        if trainable {
            self.trainable += n;
        } else {
            self.buffers += n;
        }
    }
}

impl FourMConfig {
    /// The scalars of this model over `modalities`, counted from the sizes; equals
    /// `ParamLayout::new(&model).len()` (trainable) for the built model.
    pub fn param_count(&self, modalities: &Modalities) -> ParamCount {
        let d = self.dim;
        let hd = self.head_dim();
        let h = self.mlp_hidden();
        let bias = self.block_bias();
        let mut c = ParamCount {
            trainable: 0,
            buffers: 0,
            embeddings: 0,
        };
        // A LayerNorm of width n: weight trained, bias trained or a zero buffer.
        let norm = |c: &mut ParamCount, n: usize| {
            c.add(n, true);
            c.add(n, self.norm_bias_trainable());
        };
        let linear = |c: &mut ParamCount, i: usize, o: usize| {
            c.add(i * o, true);
            if bias {
                c.add(o, true);
            }
        };
        let pos_rows = |kind: &ModalityKind| match kind {
            ModalityKind::ImageTokens { grid } | ModalityKind::ImagePixels { grid, .. } => {
                grid[0] * grid[1]
            }
            ModalityKind::Sequence { .. } => SEQ_POS_EMB_ROWS,
        };
        for m in modalities.iter() {
            match m.kind {
                ModalityKind::ImagePixels {
                    patch_size,
                    channels,
                    ..
                } => c.add(patch_size * patch_size * channels * d, true),
                _ => c.add(m.vocab_size * d, true),
            }
            c.add(d, true); // mod_emb
            c.add(pos_rows(&m.kind) * d, false);
        }
        for m in modalities.targets() {
            c.add(m.vocab_size * d, true);
            c.add(pos_rows(&m.kind) * d, false);
        }
        c.embeddings = c.trainable;
        let attention = |c: &mut ParamCount, fused_qkv: bool| {
            if fused_qkv {
                linear(c, d, 3 * d);
            } else {
                linear(c, d, d);
                linear(c, d, 2 * d);
            }
            linear(c, d, d);
            if self.qk_norm {
                norm(c, hd);
                norm(c, hd);
            }
        };
        let mlp = |c: &mut ParamCount| match self.variant {
            ArchVariant::Gelu => {
                linear(c, d, h);
                linear(c, h, d);
            }
            ArchVariant::SwigluNobias => {
                linear(c, d, h);
                linear(c, h, d);
                linear(c, d, h);
            }
        };
        for _ in 0..self.encoder_depth {
            norm(&mut c, d);
            attention(&mut c, true);
            norm(&mut c, d);
            mlp(&mut c);
        }
        norm(&mut c, d); // encoder_norm
        c.add(d * d + d, true); // decoder_proj_context (always with a bias)
        for _ in 0..self.decoder_depth {
            norm(&mut c, d);
            attention(&mut c, true);
            norm(&mut c, d); // query_norm
            norm(&mut c, d); // context_norm
            attention(&mut c, false);
            norm(&mut c, d);
            mlp(&mut c);
        }
        norm(&mut c, d); // decoder_norm
        c.add(d, true); // mask_token
        c
    }
}

/// Number format of the forward and backward pass (master weights and moments stay fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// fp32 everywhere.
    F32,
    /// bf16 autocast: bf16 activations and a bf16 copy of the weights.
    Bf16,
}

/// What one rank trains.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput {
    /// Data-parallel ranks.
    pub world: usize,
    /// Samples of one micro-batch on this rank.
    pub micro_batch: usize,
    /// Encoder tokens per sample.
    pub encoder_tokens: usize,
    /// Decoder tokens per sample.
    pub decoder_tokens: usize,
    /// ZeRO-1: this rank holds the optimizer state of its shard only.
    pub shard_optimizer: bool,
    /// Forward/backward number format.
    pub precision: Precision,
}

/// Bytes one rank holds, by kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPlan {
    /// The scalars of the model.
    pub count: ParamCount,
    /// Weights and buffers (and their bf16 copy under autocast).
    pub parameters: u64,
    /// The flat gradient.
    pub gradients: u64,
    /// AdamW moments and decay mask of this rank's elements.
    pub optimizer: u64,
    /// Activations kept for the backward pass of one micro-batch.
    pub activations: u64,
}

impl MemoryPlan {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.parameters + self.gradients + self.optimizer + self.activations
    }
}

/// Bytes per trainable element of AdamW's state: two fp32 moments and a one-byte decay flag.
pub const OPTIMIZER_BYTES_PER_ELEMENT: u64 = 9;

/// The per-rank memory of training `config` over `modalities` as `input` says.
pub fn plan_memory(config: &FourMConfig, modalities: &Modalities, input: PlanInput) -> MemoryPlan {
    let count = config.param_count(modalities);
    let p = count.trainable as u64;
    let act_bytes: u64 = match input.precision {
        Precision::F32 => 4,
        Precision::Bf16 => 2,
    };
    let parameters = 4 * (p + count.buffers as u64)
        + if input.precision == Precision::Bf16 {
            2 * p
        } else {
            0
        };
    let world = input.world.max(1) as u64;
    let elements = if input.shard_optimizer {
        p.div_ceil(world)
    } else {
        p
    };
    let targets: Vec<usize> = modalities.targets().map(|m| m.vocab_size).collect();
    let mean_vocab = targets.iter().sum::<usize>() / targets.len().max(1);
    let activations = act_bytes
        * input.micro_batch as u64
        * activation_elements(
            config,
            input.encoder_tokens,
            input.decoder_tokens,
            mean_vocab,
        );
    MemoryPlan {
        count,
        parameters,
        gradients: 4 * p,
        optimizer: OPTIMIZER_BYTES_PER_ELEMENT * elements,
        activations,
    }
}

/// Scalars autograd keeps for one sample: `n` encoder and `m` decoder tokens.
fn activation_elements(c: &FourMConfig, n: usize, m: usize, vocab: usize) -> u64 {
    let (d, h, heads) = (c.dim as u64, c.mlp_hidden() as u64, c.num_heads as u64);
    let (n, m, v) = (n as u64, m as u64, vocab as u64);
    // MLP intermediates: SwiGLU keeps fc1, fc3, silu(fc1) and the product; GELU fc1 and gelu.
    let mlp = match c.variant {
        ArchVariant::Gelu => 2 * h,
        ArchVariant::SwigluNobias => 4 * h,
    };
    // Self-attention block over t tokens: norm in/out ×2, qkv, attention output, projection,
    // residuals (≈ 10·D per token), the MLP, and scores plus probabilities per head.
    let block = |t: u64| t * (10 * d + mlp) + 2 * heads * t * t;
    // Cross-attention: q, output, projection and query norm on m tokens, kv and context norm on
    // n tokens, scores plus probabilities.
    let cross = m * 4 * d + n * 4 * d + 2 * heads * m * n;
    let encoder = c.encoder_depth as u64 * block(n);
    let decoder = c.decoder_depth as u64 * (block(m) + cross);
    // Embeddings in, the context projection, and logits with their log-softmax.
    let edges = (n + m) * 2 * d + 2 * m * v;
    encoder + decoder + edges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(world: usize, shard: bool) -> PlanInput {
        PlanInput {
            world,
            micro_batch: 8,
            encoder_tokens: 128,
            decoder_tokens: 128,
            shard_optimizer: shard,
            precision: Precision::F32,
        }
    }

    #[test]
    fn sharding_divides_only_the_optimizer() {
        let (c, m) = (FourMConfig::perf(), Modalities::perf());
        let whole = plan_memory(&c, &m, input(4, false));
        let sharded = plan_memory(&c, &m, input(4, true));
        assert_eq!(whole.parameters, sharded.parameters);
        assert_eq!(whole.gradients, sharded.gradients);
        assert_eq!(whole.activations, sharded.activations);
        let p = whole.count.trainable as u64;
        assert_eq!(whole.optimizer, 9 * p);
        assert_eq!(sharded.optimizer, 9 * p.div_ceil(4));
        let bf16 = plan_memory(
            &c,
            &m,
            PlanInput {
                precision: Precision::Bf16,
                ..input(4, false)
            },
        );
        assert_eq!(bf16.activations * 2, whole.activations);
        assert_eq!(bf16.parameters, whole.parameters + 2 * p);
    }

    #[test]
    fn released_sizes_are_in_the_published_range() {
        // ml-4m's README: 4M-B 198 M, 4M-L 705 M, 4M-XL 2.8 B parameters, without the
        // per-modality embeddings.
        let m = Modalities::mod7_224();
        let count = |c: FourMConfig| {
            let n = c.param_count(&m);
            (n.trainable - n.embeddings) as f64 / 1e9
        };
        let (b, l, xl) = (
            count(FourMConfig::base(ArchVariant::SwigluNobias)),
            count(FourMConfig::large(ArchVariant::SwigluNobias)),
            count(FourMConfig::xlarge(ArchVariant::SwigluNobias)),
        );
        assert!((0.19..0.21).contains(&b), "base {b}");
        assert!((0.69..0.72).contains(&l), "large {l}");
        assert!((2.7..2.9).contains(&xl), "xlarge {xl}");
    }
}
