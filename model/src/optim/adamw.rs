//! AdamW as `torch.optim.AdamW` computes it (multi-tensor path), over the flat parameter vector,
//! with ml-4m's two groups: decay, and no decay for norms and biases.

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::ParamLayout;

/// AdamW hyper-parameters (ml-4m defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay of the decay group.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { betas: (0.9, 0.95), eps: 1e-8, weight_decay: 0.05 }
    }
}

/// Optimizer state: first and second moments and the step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    decay_mask: Tensor<1>,
    exp_avg: Tensor<1>,
    exp_avg_sq: Tensor<1>,
    step: u64,
}

impl AdamW {
    /// Fresh state for `layout`.
    pub fn new(config: AdamWConfig, layout: &ParamLayout, device: &Device) -> Self {
        let n = layout.len();
        Self {
            config,
            decay_mask: layout.decay_mask(device),
            exp_avg: Tensor::zeros([n], device),
            exp_avg_sq: Tensor::zeros([n], device),
            step: 0,
        }
    }

    /// Restores a state saved with [`AdamW::state`].
    pub fn from_state(config: AdamWConfig, layout: &ParamLayout, exp_avg: Tensor<1>, exp_avg_sq: Tensor<1>, step: u64) -> Self {
        let device = exp_avg.device();
        Self { config, decay_mask: layout.decay_mask(&device), exp_avg, exp_avg_sq, step }
    }

    /// `(exp_avg, exp_avg_sq, step)`.
    pub fn state(&self) -> (Tensor<1>, Tensor<1>, u64) {
        (self.exp_avg.clone(), self.exp_avg_sq.clone(), self.step)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// One update of `params` with `grads` at learning rate `lr`; returns the new parameters.
    pub fn step(&mut self, params: Tensor<1>, grads: Tensor<1>, lr: f64) -> Tensor<1> {
        let (b1, b2) = self.config.betas;
        self.step += 1;
        // p *= 1 - lr·wd (decay group only).
        let shrink = self.decay_mask.clone().mul_scalar(-lr * self.config.weight_decay).add_scalar(1.0);
        let params = params * shrink;
        // exp_avg.lerp_(g, 1 - β₁); exp_avg_sq = β₂·exp_avg_sq + (1 - β₂)·g².
        self.exp_avg = self.exp_avg.clone() + (grads.clone() - self.exp_avg.clone()).mul_scalar(1.0 - b1);
        self.exp_avg_sq = self.exp_avg_sq.clone().mul_scalar(b2) + grads.square().mul_scalar(1.0 - b2);
        let bias1 = 1.0 - b1.powi(self.step as i32);
        let bias2 = 1.0 - b2.powi(self.step as i32);
        let denom = self.exp_avg_sq.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(self.config.eps);
        params - (self.exp_avg.clone() / denom).mul_scalar(lr / bias1)
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }
}
