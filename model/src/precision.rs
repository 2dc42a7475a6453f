//! Mixed precision: what ml-4m's training loop gets from `torch.autocast(dtype=torch.bfloat16)`
//! (ml-4m `run_training_4m.py`, the `autocast` context around the forward pass).
//!
//! With [`Precision::Bf16`] the matrix products — every Linear layer (block projections and MLPs,
//! the decoder's context projection, the encoder's patch projection), the attention scores and
//! their product with the values, the tied output projection — take `bf16` operands and give a
//! `bf16` result (accumulated in `f32` by the backends), which is widened back to `f32`; softmax,
//! LayerNorm, the activations, the residual stream and the loss stay in `f32`. The parameters
//! (master weights), their gradients and the AdamW moments stay `f32`: the casts are graph
//! operations, so a weight's gradient arrives in `f32`.
//!
//! One difference from torch's autocast: there a Linear layer's `bf16` output flows on into the
//! element-wise operations after it (the SwiGLU gate, the residual add promotes to `f32`); here
//! each product is widened at once, so those element-wise operations run in `f32`.
//!
//! Like torch's autocast the precision is a per-thread setting around the forward pass
//! ([`autocast`]); the layers ask [`current`].

use std::cell::Cell;

use burn::nn::Linear;
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// The arithmetic of the forward pass's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in `f32`.
    #[default]
    F32,
    /// Matrix products in `bf16`, the rest in `f32` (see the module documentation).
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision `{other}` (expected `f32` or `bf16`)"
            )),
        }
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The precision of this thread's forward passes.
pub fn current() -> Precision {
    CURRENT.with(Cell::get)
}

/// Runs `f` with this thread's forward passes in `precision` (restored afterwards, also if `f`
/// panics).
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(precision)));
    f()
}

/// The dtype the matrix products take under `precision`.
fn operand_dtype() -> Option<DType> {
    match current() {
        Precision::F32 => None,
        Precision::Bf16 => Some(DType::BF16),
    }
}

/// `layer(x)` in the current precision.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let Some(dtype) = operand_dtype() else {
        return layer.forward(x);
    };
    let weight = layer.weight.val().cast(dtype);
    let bias = layer.bias.as_ref().map(|b| b.val().cast(dtype));
    burn::tensor::module::linear(x.cast(dtype), weight, bias).cast(DType::F32)
}

/// `a · b` (batched over the leading dimensions) in the current precision.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    match operand_dtype() {
        None => a.matmul(b),
        Some(dtype) => a.cast(dtype).matmul(b.cast(dtype)).cast(DType::F32),
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;

    #[test]
    fn bf16_products_round_their_operands_and_come_back_as_f32() {
        let device = Device::flex();
        let a = Tensor::<2>::random([8, 16], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<2>::random([16, 4], Distribution::Normal(0.0, 1.0), &device);
        let exact = matmul(a.clone(), b.clone());
        let half = autocast(Precision::Bf16, || matmul(a.clone(), b.clone()));
        assert_eq!(current(), Precision::F32, "restored after the scope");
        assert_eq!(half.dtype(), DType::F32);
        let (exact, half) = (
            exact.into_data().try_to_vec::<f32>().unwrap(),
            half.into_data().try_to_vec::<f32>().unwrap(),
        );
        let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = exact
            .iter()
            .zip(&half)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        // bf16 keeps 8 bits of mantissa: operands and result each within 2^-8 relative.
        assert!(worst > 0.0, "bf16 must round something");
        assert!(worst < 0.05 * scale, "{worst} vs {scale}");
    }

    #[test]
    fn precision_parses_and_prints() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert!("fp16".parse::<Precision>().is_err());
    }
}
