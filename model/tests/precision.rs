//! bf16 mixed precision ([`fourm_model::precision`]) on the ml-4m parity fixture: the loss and
//! the gradient stay close to `f32`'s, the parameters' gradients arrive in `f32`, and `f32` is
//! untouched by the setting being available.

mod fixture;

use burn::tensor::{DType, Device};
use fixture::{batch, load_model, vendored};
use fourm_model::optim::ParamLayout;
use fourm_model::{Precision, StepOptions};

/// `|bf16 - f32| / |f32|` of the loss may not exceed this. bf16 keeps 8 significant bits
/// (relative rounding 2^-9 ≈ 0.2 %) in each product's operands and result; the roundings mostly
/// cancel: measured 2.2e-4 on parity-a (the test prints it), the bound is ten times that.
const LOSS_RTOL: f64 = 2e-3;
/// The bf16 gradient's cosine similarity with the f32 gradient must be at least this (measured
/// 0.99998 on parity-a).
const GRAD_COSINE: f64 = 0.999;

#[test]
fn bf16_loss_and_gradient_track_f32_on_the_parity_fixture() {
    let dir = vendored("parity-a");
    let (_, mods, model) = load_model(&dir, &Device::flex().autodiff());
    let inputs = fixture::Tensors::read(&dir.join("inputs.safetensors"));
    let batch = batch(&inputs, &mods);
    let layout = ParamLayout::new(&model);
    let run = |precision: Precision| {
        let options = StepOptions {
            precision,
            ..StepOptions::new(
                inputs.ints("num_encoder_tokens")[0] as usize,
                inputs.ints("num_decoder_tokens")[0] as usize,
            )
        };
        let out = model.gradients(&layout, &batch, &options, 1).unwrap();
        assert_eq!(out.grads.dtype(), DType::F32, "master gradients in f32");
        let grads = out.grads.into_data().try_to_vec::<f32>().unwrap();
        (out.loss, grads)
    };
    let (loss32, g32) = run(Precision::F32);
    let (loss16, g16) = run(Precision::Bf16);
    let rel = (loss16 - loss32).abs() / loss32.abs();
    let dot: f64 = g32.iter().zip(&g16).map(|(a, b)| f64::from(a * b)).sum();
    let norm = |g: &[f32]| g.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
    let cosine = dot / (norm(&g32) * norm(&g16));
    println!(
        "parity-a loss f32 {loss32:.6} bf16 {loss16:.6} (rel {rel:.2e}); gradient cosine {cosine:.6}"
    );
    assert!(rel < LOSS_RTOL, "loss f32 {loss32} vs bf16 {loss16}");
    assert!(
        rel > 0.0 || g32 != g16,
        "bf16 changed nothing: the setting is not applied"
    );
    assert!(cosine > GRAD_COSINE, "gradient cosine {cosine}");
    // The setting is per forward pass: f32 afterwards is f32 again, bit for bit.
    let (again, g_again) = run(Precision::F32);
    assert_eq!(again, loss32);
    assert_eq!(g_again, g32);
}
