//! Global-norm gradient clipping over the flat gradient (burn clips per tensor; ml-4m and torch
//! clip by the norm of all gradients together).

use burn::tensor::Tensor;

/// `‖g‖₂` of the whole flat gradient.
pub fn global_norm(grads: &Tensor<1>) -> f64 {
    grads.clone().square().sum().sqrt().into_scalar::<f32>() as f64
}

/// torch's `clip_grad_norm_`: scales by `max_norm / (‖g‖ + 1e-6)` when that is below 1.
/// Returns the clipped gradient and the norm before clipping.
pub fn clip_global_norm(grads: Tensor<1>, max_norm: f64) -> (Tensor<1>, f64) {
    let norm = global_norm(&grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        (grads.mul_scalar(coef), norm)
    } else {
        (grads, norm)
    }
}
