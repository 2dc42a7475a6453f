//! AdamW as `torch.optim.AdamW` computes it (multi-tensor path, in `f32`), over the flat
//! parameter vector, with ml-4m's two groups: decay, and no decay for norms and biases.
//!
//! On the CPU backend the update is one fused pass over host memory; on an accelerator it is a
//! sequence of tensor operations on the device. Both follow the same formulas.
//!
//! A state may cover only a range of the flat vector (a rank's shard when the optimizer state is
//! sharded, ZeRO-1): its moments, its decay mask and the vectors [`AdamW::step`] takes are that
//! range's.

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
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
        Self {
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }
}

/// First and second moments, where the update runs.
#[derive(Debug, Clone)]
enum Moments {
    Host {
        decay: Vec<bool>,
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
    },
    Device(Box<DeviceMoments>),
}

#[derive(Debug, Clone)]
struct DeviceMoments {
    decay_mask: Tensor<1>,
    exp_avg: Tensor<1>,
    exp_avg_sq: Tensor<1>,
}

/// Optimizer state: moments and the step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    moments: Moments,
    step: u64,
    device: Device,
    /// The elements of the flat vector this state covers.
    range: Range<usize>,
}

/// The scalars of one update, computed in `f64` as torch does before it touches tensors.
struct Coefficients {
    shrink: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    bias2_sqrt: f32,
    eps: f32,
    step_size: f32,
}

impl AdamW {
    /// Fresh state for `layout` on `device` (a plain, non-autodiff device).
    pub fn new(config: AdamWConfig, layout: &ParamLayout, device: &Device) -> Self {
        Self::new_range(config, layout, 0..layout.len(), device)
    }

    /// Fresh state for the elements `range` of `layout`'s flat vector.
    pub fn new_range(
        config: AdamWConfig,
        layout: &ParamLayout,
        range: Range<usize>,
        device: &Device,
    ) -> Self {
        let n = range.len();
        Self::from_state_range(
            config,
            layout,
            range,
            Tensor::zeros([n], device),
            Tensor::zeros([n], device),
            0,
        )
    }

    /// Restores a state saved with [`AdamW::state`].
    pub fn from_state(
        config: AdamWConfig,
        layout: &ParamLayout,
        exp_avg: Tensor<1>,
        exp_avg_sq: Tensor<1>,
        step: u64,
    ) -> Self {
        Self::from_state_range(config, layout, 0..layout.len(), exp_avg, exp_avg_sq, step)
    }

    /// Restores the state of the elements `range` (moments of `range.len()` elements).
    pub fn from_state_range(
        config: AdamWConfig,
        layout: &ParamLayout,
        range: Range<usize>,
        exp_avg: Tensor<1>,
        exp_avg_sq: Tensor<1>,
        step: u64,
    ) -> Self {
        debug_assert!(
            range.end <= layout.len() && exp_avg.dims()[0] == range.len(),
            "AdamW state of {} elements for the range {range:?} of {}",
            exp_avg.dims()[0],
            layout.len()
        );
        let device = exp_avg.device();
        let moments = if device == Device::flex() {
            let decay = layout
                .entries()
                .iter()
                .flat_map(|e| std::iter::repeat_n(e.info.decays(), e.info.numel()))
                .skip(range.start)
                .take(range.len())
                .collect();
            Moments::Host {
                decay,
                exp_avg: host(exp_avg),
                exp_avg_sq: host(exp_avg_sq),
            }
        } else {
            let decay_mask = layout.decay_mask(&device).slice(range.clone());
            Moments::Device(Box::new(DeviceMoments {
                decay_mask,
                exp_avg,
                exp_avg_sq,
            }))
        };
        Self {
            config,
            moments,
            step,
            device,
            range,
        }
    }

    /// The elements of the flat vector this state covers.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Runs the update as tensor operations even on the CPU (what accelerators do).
    pub fn with_tensor_ops(self, layout: &ParamLayout) -> Self {
        let (exp_avg, exp_avg_sq, step) = self.state();
        let decay_mask = layout.decay_mask(&self.device).slice(self.range.clone());
        let moments = Moments::Device(Box::new(DeviceMoments {
            decay_mask,
            exp_avg,
            exp_avg_sq,
        }));
        Self {
            moments,
            step,
            ..self
        }
    }

    /// `(exp_avg, exp_avg_sq, step)`.
    pub fn state(&self) -> (Tensor<1>, Tensor<1>, u64) {
        match &self.moments {
            Moments::Host {
                exp_avg,
                exp_avg_sq,
                ..
            } => {
                let m = device_tensor(exp_avg.clone(), &self.device);
                (
                    m,
                    device_tensor(exp_avg_sq.clone(), &self.device),
                    self.step,
                )
            }
            Moments::Device(d) => (d.exp_avg.clone(), d.exp_avg_sq.clone(), self.step),
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update of `params` with `grads` (both over [`Self::range`]) at learning rate `lr`;
    /// returns the new parameters.
    pub fn step(&mut self, params: Tensor<1>, grads: Tensor<1>, lr: f64) -> Tensor<1> {
        self.step += 1;
        let (b1, b2) = self.config.betas;
        let bias1 = 1.0 - b1.powi(self.step as i32);
        let bias2 = 1.0 - b2.powi(self.step as i32);
        let c = Coefficients {
            shrink: (1.0 - lr * self.config.weight_decay) as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            bias2_sqrt: bias2.sqrt() as f32,
            eps: self.config.eps as f32,
            step_size: (lr / bias1) as f32,
        };
        match &mut self.moments {
            Moments::Host {
                decay,
                exp_avg,
                exp_avg_sq,
            } => {
                let mut p = host(params);
                let g = host(grads);
                host_step(&c, decay, &mut p, &g, exp_avg, exp_avg_sq);
                device_tensor(p, &self.device)
            }
            Moments::Device(d) => {
                let DeviceMoments {
                    decay_mask,
                    exp_avg,
                    exp_avg_sq,
                } = d.as_mut();
                // p *= 1 - lr·wd on the decay group.
                let shrink = decay_mask
                    .clone()
                    .mul_scalar(c.shrink - 1.0)
                    .add_scalar(1.0);
                let params = params * shrink;
                // exp_avg.lerp_(g, 1 - β₁); exp_avg_sq = β₂·exp_avg_sq + (1 - β₂)·g².
                *exp_avg =
                    exp_avg.clone() + (grads.clone() - exp_avg.clone()).mul_scalar(c.one_minus_b1);
                *exp_avg_sq =
                    exp_avg_sq.clone().mul_scalar(c.b2) + grads.square().mul_scalar(c.one_minus_b2);
                let denom = exp_avg_sq
                    .clone()
                    .sqrt()
                    .div_scalar(c.bias2_sqrt)
                    .add_scalar(c.eps);
                params - (exp_avg.clone() / denom).mul_scalar(c.step_size)
            }
        }
    }
}

/// Elements below which one thread updates them all (a thread costs more than it saves).
const MIN_ELEMENTS_PER_THREAD: usize = 1 << 16;

/// [`host_update`] over every element, split in contiguous chunks over the cores: the update is
/// bound by memory bandwidth, which one core does not saturate. Each element is computed alone,
/// so the result does not depend on the split.
fn host_step(
    c: &Coefficients,
    decay: &[bool],
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = p.len().div_ceil(threads).max(MIN_ELEMENTS_PER_THREAD);
    let update = |decay: &[bool], p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for i in 0..p.len() {
            host_update(c, decay[i], &mut p[i], g[i], &mut m[i], &mut v[i]);
        }
    };
    if chunk >= p.len() {
        update(decay, p, g, m, v);
        return;
    }
    std::thread::scope(|scope| {
        let chunks = decay
            .chunks(chunk)
            .zip(p.chunks_mut(chunk))
            .zip(g.chunks(chunk))
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk));
        for ((((decay, p), g), m), v) in chunks {
            scope.spawn(move || update(decay, p, g, m, v));
        }
    });
}

/// The fused per-element update (same operation order as the device path).
#[inline]
fn host_update(c: &Coefficients, decays: bool, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
    if decays {
        *p *= c.shrink;
    }
    *m += (g - *m) * c.one_minus_b1;
    *v = *v * c.b2 + g * g * c.one_minus_b2;
    let denom = v.sqrt() / c.bias2_sqrt + c.eps;
    *p -= (*m / denom) * c.step_size;
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

fn device_tensor(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FourMConfig, Modalities, ModalitySpec};

    fn layout() -> ParamLayout {
        let modalities = Modalities::new(vec![
            ModalitySpec::image_tokens("tok_rgb@32", 16, [2, 2]),
            ModalitySpec::sequence("caption", 16, 4),
        ])
        .unwrap();
        let model = FourMConfig::debug()
            .init(&modalities, 0, &Device::flex())
            .unwrap();
        ParamLayout::new(&model)
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn shards_update_like_the_whole_vector() {
        let layout = layout();
        let n = layout.len();
        let device = Device::flex();
        let config = AdamWConfig::default();
        let params = values(n, 1);
        let grads = [values(n, 2), values(n, 3)];
        let mut whole = AdamW::new(config, &layout, &device);
        let mut p = device_tensor(params.clone(), &device);
        for g in &grads {
            p = whole.step(p, device_tensor(g.clone(), &device), 1e-2);
        }
        let expected = host(p);
        // Three uneven shards, one of them cutting through a parameter.
        let cuts = [0, n / 3 + 1, 2 * n / 3, n];
        let mut got = Vec::new();
        for w in cuts.windows(2) {
            let range = w[0]..w[1];
            let mut shard = AdamW::new_range(config, &layout, range.clone(), &device);
            let mut p = device_tensor(params[range.clone()].to_vec(), &device);
            for g in &grads {
                p = shard.step(p, device_tensor(g[range.clone()].to_vec(), &device), 1e-2);
            }
            let (m, _, step) = shard.state();
            assert_eq!((m.dims()[0], step), (range.len(), 2));
            got.extend(host(p));
        }
        assert_eq!(got, expected, "bit-identical to the unsharded update");
    }
}
