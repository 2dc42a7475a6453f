//! ml-4m's weight initialisation (fm.py `init_weights` and the embeddings' `init`).
//!
//! Values are drawn on the host from a ChaCha stream seeded by `(seed, parameter index)`, so every
//! rank and every backend starts from the same bits. Parameters are created lazily: their
//! values are only generated when first used, so building a model only to load weights into it,
//! or to inspect its shapes, costs nothing.

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{Device, Shape, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::config::INIT_STD;

/// How a parameter's initial values are made.
enum Fill {
    Normal(f32),
    Uniform(f32),
    Constant(f32),
    Values(Box<dyn FnOnce() -> Vec<f32> + Send + Sync>),
}

impl Fill {
    fn values(self, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match self {
            Fill::Normal(std) => {
                let dist = Normal::new(0.0f32, std).expect("valid normal");
                (0..n).map(|_| dist.sample(&mut rng)).collect()
            }
            Fill::Uniform(bound) => {
                let dist = Uniform::new_inclusive(-bound, bound).expect("valid uniform");
                (0..n).map(|_| dist.sample(&mut rng)).collect()
            }
            Fill::Constant(v) => vec![v; n],
            Fill::Values(make) => make(),
        }
    }
}

/// Deterministic source of initial parameters.
pub struct InitRng {
    seed: u64,
    counter: u64,
    device: Device,
}

impl InitRng {
    /// A source seeded by `seed`, creating parameters on `device`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            seed,
            counter: 0,
            device: device.clone(),
        }
    }

    /// SplitMix64 of `(seed, counter)`: an independent stream per parameter.
    fn next_seed(&mut self) -> u64 {
        self.counter += 1;
        let mut z = self.seed ^ self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn lazy<const D: usize>(
        &mut self,
        shape: [usize; D],
        fill: Fill,
        trainable: bool,
    ) -> Param<Tensor<D>> {
        let seed = self.next_seed();
        let n = shape.iter().product();
        let init = move |device: &Device, require_grad: bool| {
            let t = Tensor::from_data(TensorData::new(fill.values(n, seed), shape), device);
            if require_grad { t.require_grad() } else { t }
        };
        Param::uninitialized(
            ParamId::new(),
            init,
            self.device.clone(),
            trainable,
            Shape::from(shape),
        )
    }

    /// A trainable parameter `N(0, init_std)` (embeddings, `mod_emb`, `mask_token`).
    pub fn normal<const D: usize>(&mut self, shape: [usize; D]) -> Param<Tensor<D>> {
        self.lazy(shape, Fill::Normal(INIT_STD as f32), true)
    }

    /// A trainable parameter `U(-bound, bound)`.
    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f64) -> Param<Tensor<D>> {
        self.lazy(shape, Fill::Uniform(bound as f32), true)
    }

    /// A trainable parameter filled with `value`.
    pub fn constant<const D: usize>(&mut self, shape: [usize; D], value: f32) -> Param<Tensor<D>> {
        self.lazy(shape, Fill::Constant(value), true)
    }

    /// A non-trainable tensor (ml-4m's registered buffers: sin-cos tables, bias-less LayerNorm
    /// biases), kept in the module so that it is saved and loaded under its ml-4m name.
    pub fn buffer<const D: usize>(
        &mut self,
        shape: [usize; D],
        values: impl FnOnce() -> Vec<f32> + Send + Sync + 'static,
    ) -> Param<Tensor<D>> {
        self.lazy(shape, Fill::Values(Box::new(values)), false)
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
}

/// `sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_bound(fan_in: usize, fan_out: usize) -> f64 {
    (6.0 / (fan_in + fan_out) as f64).sqrt()
}
