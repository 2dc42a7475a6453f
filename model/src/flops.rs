//! Floating-point operations of a training step, for throughput and MFU reporting.
//!
//! Counts multiply-adds of the matrix products as 2 FLOPs (linear layers, attention scores and
//! values, the output heads); element-wise work is ignored. Backward costs twice the forward.

use crate::config::{ArchVariant, FourMConfig};

/// Token counts of one training step.
#[derive(Debug, Clone, Copy)]
pub struct StepShape {
    /// Samples.
    pub batch: usize,
    /// Encoder slots per sample.
    pub encoder_tokens: usize,
    /// Decoder slots per sample.
    pub decoder_tokens: usize,
    /// Average vocabulary size over the decoder targets.
    pub mean_vocab: usize,
}

impl FourMConfig {
    /// Forward FLOPs of one step of shape `s`.
    pub fn forward_flops(&self, s: StepShape) -> f64 {
        let d = self.dim as f64;
        let h = self.mlp_hidden() as f64;
        let (n, m, b) = (
            s.encoder_tokens as f64,
            s.decoder_tokens as f64,
            s.batch as f64,
        );
        let mlp = match self.variant {
            ArchVariant::Gelu => 2.0 * d * h,
            ArchVariant::SwigluNobias => 3.0 * d * h,
        };
        // Per token: qkv + proj + mlp; attention q·kᵀ and a·v over `keys` keys.
        let self_block =
            |tokens: f64| 2.0 * tokens * (4.0 * d * d + mlp) + 4.0 * tokens * tokens * d;
        let encoder = self.encoder_depth as f64 * self_block(n);
        // Decoder block: self-attention block, cross q/proj on m tokens, k/v on n context tokens.
        let cross = 2.0 * m * 2.0 * d * d + 2.0 * n * 2.0 * d * d + 4.0 * m * n * d;
        let decoder = self.decoder_depth as f64 * (self_block(m) + cross);
        let context = 2.0 * n * d * d;
        let heads = 2.0 * m * d * s.mean_vocab as f64;
        b * (encoder + decoder + context + heads)
    }

    /// Forward + backward FLOPs of one step.
    pub fn train_flops(&self, s: StepShape) -> f64 {
        3.0 * self.forward_flops(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_grow_with_the_model_and_tokens() {
        let s = StepShape {
            batch: 8,
            encoder_tokens: 128,
            decoder_tokens: 128,
            mean_vocab: 1000,
        };
        let perf = FourMConfig::perf().train_flops(s);
        // ~70 GFLOP for the benchmark step (3 × 2 × tokens × block parameters, plus attention).
        assert!(perf > 5e10 && perf < 9e10, "{perf}");
        let doubled = FourMConfig::perf().train_flops(StepShape { batch: 16, ..s });
        assert!((doubled / perf - 2.0).abs() < 1e-12);
        assert!(FourMConfig::debug().train_flops(s) < perf);
    }
}
