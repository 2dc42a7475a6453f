//! ml-4m's weight initialisation (fm.py `init_weights` and the embeddings' `init`), drawn on the
//! host from a seeded ChaCha stream so that every rank and every backend starts from the same
//! bits.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::config::INIT_STD;

/// Deterministic source of initial values.
pub struct InitRng {
    rng: ChaCha8Rng,
    device: Device,
}

impl InitRng {
    /// A stream seeded by `seed`, creating tensors on `device`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed), device: device.clone() }
    }

    /// The device parameters are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn tensor<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), &self.device)
    }

    /// A trainable parameter `N(0, init_std)` (embeddings, `mod_emb`, `mask_token`).
    pub fn normal<const D: usize>(&mut self, shape: [usize; D]) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let dist = Normal::new(0.0f32, INIT_STD as f32).expect("valid normal");
        let values = (0..n).map(|_| dist.sample(&mut self.rng)).collect();
        Param::from_tensor(self.tensor(values, shape))
    }

    /// A trainable parameter `U(-bound, bound)`.
    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f64) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let b = bound as f32;
        let dist = Uniform::new_inclusive(-b, b).expect("valid uniform");
        let values = (0..n).map(|_| dist.sample(&mut self.rng)).collect();
        Param::from_tensor(self.tensor(values, shape))
    }

    /// A trainable parameter filled with `value`.
    pub fn constant<const D: usize>(&mut self, shape: [usize; D], value: f32) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        Param::from_tensor(self.tensor(vec![value; n], shape))
    }

    /// A non-trainable tensor (ml-4m's registered buffers: sin-cos tables, bias-less LayerNorm
    /// biases), kept in the module so that it is saved and loaded under its ml-4m name.
    pub fn buffer<const D: usize>(&mut self, values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(self.tensor(values, shape)).set_require_grad(false)
    }

    /// A Linear layer (burn layout: weight `[d_in, d_out]`) with weights `U(-bound, bound)` and
    /// zero bias.
    pub fn linear(&mut self, d_in: usize, d_out: usize, bias: bool, bound: f64) -> Linear {
        Linear {
            weight: self.uniform([d_in, d_out], bound),
            bias: bias.then(|| self.constant([d_out], 0.0)),
        }
    }

    /// `xavier_uniform_` of a torch Linear `(d_out, d_in)`: bound `sqrt(6 / (d_in + d_out))`.
    pub fn xavier_linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        self.linear(d_in, d_out, bias, xavier_bound(d_in, d_out))
    }

    /// A raw draw, for tests and synthetic inputs.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

/// `sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_bound(fan_in: usize, fan_out: usize) -> f64 {
    (6.0 / (fan_in + fan_out) as f64).sqrt()
}
