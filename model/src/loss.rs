//! The 4M losses (`forward_mod_loss` / `forward_token_loss`, fm.py:578-637): cross-entropy over
//! the target slots of each modality, then averaged over modalities or over logits.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::embed::{DecoderEmbedding, int_tensor};
use crate::plan::ModalitySlots;

/// How modality losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// `Σ_m loss_m / #modalities`, counting modalities without targets (ml-4m default).
    #[default]
    Mod,
    /// `Σ_m loss_m·count_m / Σ count_m` with `count_m = tokens × vocab` (ml-4m's quirk).
    Token,
}

/// The loss of one decoder modality.
#[derive(Debug)]
pub struct ModalityLoss {
    /// Modality name.
    pub modality: String,
    /// Logits of its target slots in row-major `(b, slot)` order, `[n, vocab]` (`None` if `n = 0`).
    pub logits: Option<Tensor<2>>,
    /// Target id of each logits row.
    pub targets: Vec<i64>,
    /// Mean cross-entropy, `[1]` (0 without targets).
    pub loss: Tensor<1>,
    /// `logits.numel()`, the weight of the `token` loss.
    pub count: usize,
}

/// Cross-entropy of the slots `slots` of `y` (`[b·m, d]`) under the output head `head`.
pub fn modality_loss(name: &str, head: &DecoderEmbedding, y: Tensor<2>, slots: &ModalitySlots, device: &Device) -> ModalityLoss {
    let n = slots.slots.len();
    if n == 0 {
        return ModalityLoss {
            modality: name.to_string(),
            logits: None,
            targets: Vec::new(),
            loss: Tensor::zeros([1], device),
            count: 0,
        };
    }
    let logits = head.logits(y.select(0, int_tensor(slots.slots.clone(), device)));
    let vocab = logits.dims()[1];
    let targets: Tensor<2, Int> = Tensor::from_data(TensorData::new(slots.targets.clone(), [n, 1]), device);
    let picked = log_softmax(logits.clone(), 1).gather(1, targets);
    let loss = picked.mean().neg();
    ModalityLoss { modality: name.to_string(), logits: Some(logits), targets: slots.targets.clone(), loss, count: n * vocab }
}

/// The total loss of a step.
pub fn combine_losses(losses: &[ModalityLoss], kind: LossType, device: &Device) -> Tensor<1> {
    match kind {
        LossType::Mod => {
            let sum = losses.iter().fold(Tensor::zeros([1], device), |acc, l| acc + l.loss.clone());
            sum.div_scalar(losses.len().max(1) as f64)
        }
        LossType::Token => {
            let total: usize = losses.iter().map(|l| l.count).sum();
            if total == 0 {
                return Tensor::zeros([1], device);
            }
            let sum = losses
                .iter()
                .fold(Tensor::zeros([1], device), |acc, l| acc + l.loss.clone().mul_scalar(l.count as f64));
            sum.div_scalar(total as f64)
        }
    }
}
