//! The 4M losses (`forward_mod_loss` / `forward_token_loss`, fm.py:578-637): cross-entropy over
//! the target slots of each modality, then averaged over modalities or over logits.
//!
//! Both reductions are a weighted sum of per-modality cross-entropy *sums*:
//! `mod`: `w_m = 1 / (#modalities · n_m)`; `token`: `w_m = V_m / Σ n·V` (ml-4m weighs each
//! modality by `logits.numel() = n_m · V_m`). Weights computed from this batch reproduce ml-4m;
//! weights computed from the counts of a larger batch make the losses of its parts add up to the
//! loss of the whole, which is how micro-batches and data-parallel ranks compute exactly the
//! full-batch gradient.

use std::collections::BTreeMap;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::embed::{DecoderEmbedding, int_tensor};
use crate::selection::ModalitySlots;

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

/// Target tokens of one decoder modality in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCount {
    /// Modality name.
    pub modality: String,
    /// Target tokens.
    pub tokens: usize,
    /// Vocabulary size of the modality.
    pub vocab: usize,
}

/// Weights on the per-modality cross-entropy sums.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossWeights(BTreeMap<String, f64>);

impl LossWeights {
    /// The weights that make `Σ_m w_m·Σ ce` equal ml-4m's `kind` loss over a batch with `counts`.
    pub fn new(kind: LossType, counts: &[TargetCount]) -> Self {
        let modalities = counts.len().max(1) as f64;
        let logits: f64 = counts.iter().map(|c| (c.tokens * c.vocab) as f64).sum();
        let weights = counts
            .iter()
            .map(|c| {
                let w = match kind {
                    _ if c.tokens == 0 => 0.0,
                    LossType::Mod => 1.0 / (modalities * c.tokens as f64),
                    LossType::Token => c.vocab as f64 / logits,
                };
                (c.modality.clone(), w)
            })
            .collect();
        Self(weights)
    }

    /// Weight of a modality (0 if unknown).
    pub fn get(&self, modality: &str) -> f64 {
        self.0.get(modality).copied().unwrap_or(0.0)
    }
}

/// Sums per-modality target counts of several batches (micro-batches, ranks).
pub fn sum_counts<'a>(parts: impl IntoIterator<Item = &'a [TargetCount]>) -> Vec<TargetCount> {
    let mut total: BTreeMap<String, TargetCount> = BTreeMap::new();
    for part in parts {
        for c in part {
            total
                .entry(c.modality.clone())
                .and_modify(|t| t.tokens += c.tokens)
                .or_insert_with(|| c.clone());
        }
    }
    total.into_values().collect()
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
    /// Sum of the cross-entropy over its target tokens, `[1]`.
    pub sum: Tensor<1>,
    /// Mean cross-entropy over its target tokens, `[1]` (0 without targets).
    pub loss: Tensor<1>,
    /// Target tokens.
    pub tokens: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

/// Cross-entropy of the slots `slots` of `y` (`[b·m, d]`) under the output head `head`.
pub fn modality_loss(
    name: &str,
    head: &DecoderEmbedding,
    y: Tensor<2>,
    slots: &ModalitySlots,
    device: &Device,
) -> ModalityLoss {
    let n = slots.slots.len();
    let vocab = head.token_emb.weight.lazy_shape()[0];
    if n == 0 {
        return ModalityLoss {
            modality: name.to_string(),
            logits: None,
            targets: Vec::new(),
            sum: Tensor::zeros([1], device),
            loss: Tensor::zeros([1], device),
            tokens: 0,
            vocab,
        };
    }
    let logits = head.logits(y.select(0, int_tensor(slots.slots.clone(), device)));
    let targets: Tensor<2, Int> =
        Tensor::from_data(TensorData::new(slots.targets.clone(), [n, 1]), device);
    let sum = log_softmax(logits.clone(), 1)
        .gather(1, targets)
        .sum()
        .neg();
    ModalityLoss {
        modality: name.to_string(),
        logits: Some(logits),
        targets: slots.targets.clone(),
        loss: sum.clone().div_scalar(n as f64),
        sum,
        tokens: n,
        vocab,
    }
}

/// `Σ_m w_m · Σ ce_m`.
pub fn weighted_total(
    losses: &[ModalityLoss],
    weights: &LossWeights,
    device: &Device,
) -> Tensor<1> {
    losses
        .iter()
        .filter(|l| l.tokens > 0)
        .fold(Tensor::zeros([1], device), |acc, l| {
            acc + l.sum.clone().mul_scalar(weights.get(&l.modality))
        })
}

/// The counts of a forward pass's modality losses.
pub fn counts_of(losses: &[ModalityLoss]) -> Vec<TargetCount> {
    losses
        .iter()
        .map(|l| TargetCount {
            modality: l.modality.clone(),
            tokens: l.tokens,
            vocab: l.vocab,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(m: &str, tokens: usize, vocab: usize) -> TargetCount {
        TargetCount {
            modality: m.into(),
            tokens,
            vocab,
        }
    }

    #[test]
    fn weights_reproduce_both_reductions() {
        let counts = [count("a", 4, 10), count("b", 0, 20), count("c", 2, 30)];
        let mod_w = LossWeights::new(LossType::Mod, &counts);
        // Three modalities (one empty): mean_a/3 + mean_c/3.
        assert!((mod_w.get("a") - 1.0 / 12.0).abs() < 1e-15);
        assert_eq!(mod_w.get("b"), 0.0);
        assert!((mod_w.get("c") - 1.0 / 6.0).abs() < 1e-15);
        let tok_w = LossWeights::new(LossType::Token, &counts);
        // (mean_a·40 + mean_c·60)/100 = sum_a·10/100 + sum_c·30/100.
        assert!((tok_w.get("a") - 0.1).abs() < 1e-15);
        assert!((tok_w.get("c") - 0.3).abs() < 1e-15);
    }

    #[test]
    fn counts_of_parts_add_up() {
        let a = [count("x", 3, 5), count("y", 1, 7)];
        let b = [count("x", 2, 5), count("y", 0, 7)];
        assert_eq!(
            sum_counts([&a[..], &b[..]]),
            vec![count("x", 5, 5), count("y", 1, 7)]
        );
    }
}
