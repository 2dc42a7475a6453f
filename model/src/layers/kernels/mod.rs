//! Host-memory kernels behind the CPU backend's fused operations ([`softmax_last`] and
//! [`swiglu`]): elementwise and row loops around a vectorised exponential, compiled for AVX-512
//! or AVX2 when the processor has them and split over the rayon pool the backend uses.
//!
//! burn's CPU backend evaluates `exp` one `expf` call at a time; in softmax and SiLU that was the
//! largest cost after the matrix products. [`exp`] is a branch-free polynomial (range reduction
//! to `r = x - n·ln 2`, `|r| ≤ ln 2 / 2`, and Cephes' degree-6 minimax polynomial for `expf`,
//! within 2 ulp) that the compiler vectorises.
//!
//! [`softmax_last`]: super::softmax_last
//! [`swiglu`]: super::swiglu

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{DispatchDevice, Flex};
use burn::tensor::{DType, Shape, Tensor, TensorData};

/// Whether `x` lives on the CPU backend (with or without autodiff) as `f32`, where the host
/// kernels apply.
pub(crate) fn takes_host_kernel<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32
        && matches!(
            x.device().as_dispatch().clone().inner(),
            DispatchDevice::Flex(_)
        )
}

/// The `f32` elements of host tensor data (the kernels are only called on `f32` tensors, see
/// [`takes_host_kernel`]).
pub(crate) fn f32_slice(data: &TensorData) -> &[f32] {
    data.as_slice::<f32>().expect("host kernels take f32")
}

/// A Flex tensor of `shape` holding `values` (row-major).
pub(crate) fn flex_tensor(values: Vec<f32>, shape: Shape) -> FloatTensor<Flex> {
    Flex::float_from_data(TensorData::new(values, shape), &Default::default())
}

/// Defines `pub(crate) fn $name(args)` that runs `$body(args)` (an `#[inline(always)]` function)
/// compiled for the widest instruction set the processor has: AVX-512F, AVX2 with FMA, or the
/// target's baseline. The body must be inlined into each variant for its loops to be compiled
/// with that variant's features, hence a function path rather than a closure.
macro_rules! vectorised {
    ($(#[$meta:meta])* $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        $(#[$meta])*
        #[allow(unsafe_code)]
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the processor supports AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the processor supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) mod softmax;
pub(crate) mod swiglu;

/// `e^x` for `f32`, branch-free so that loops over it vectorise. `x < -87.34` (below the
/// smallest normal result) gives 0, `x > 88.72` gives `+inf`, NaN gives NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n · LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const HI: f32 = 88.722_83;
    const LO: f32 = -87.336_55;
    let c = x.clamp(LO, HI);
    let n = (c * LOG2_E + ROUND) - ROUND;
    let r = (c - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let poly = p * (r * r) + r + 1.0;
    // 2^n built in two halves so that n = 128 (x near HI) does not overflow the exponent.
    let n = n as i32;
    let half = n >> 1;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n - half + 127) as u32) << 23);
    let v = poly * scale_a * scale_b;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        v
    }
}

/// Test helper: `a` and `b` agree within `1e-5` of the largest magnitude in `b` (the two sides
/// round differently: burn's composed operations against one fused pass).
#[cfg(test)]
pub(crate) fn assert_close<const D: usize>(a: Tensor<D>, b: Tensor<D>) {
    let (a, b) = (a.into_data(), b.into_data());
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let mut worst = 0;
        let mut x = -87.3f32;
        while x < 88.7 {
            let exact = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), exact));
            x += 0.000_731;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-f32::MAX), 0.0);
        assert_eq!(exp(1e30), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.7).is_finite());
    }
}
