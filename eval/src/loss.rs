//! Held-out loss per modality: the model's training loss on held-out samples, masked with fixed
//! seeds, so that two checkpoints (or two systems) see exactly the same inputs and targets.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use fourm_model::{Batch, FourM, StepOptions};
use serde::{Deserialize, Serialize};

use crate::error::EvalError;

/// Sums of the cross-entropy and of the target tokens, per modality (they add across batches
/// and ranks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossSums {
    /// Sum of the cross-entropy over each modality's target tokens.
    pub sum: BTreeMap<String, f64>,
    /// Target tokens of each modality.
    pub tokens: BTreeMap<String, f64>,
}

impl LossSums {
    /// Adds `other`.
    pub fn add(&mut self, other: &LossSums) {
        for (m, v) in &other.sum {
            *self.sum.entry(m.clone()).or_insert(0.0) += v;
        }
        for (m, v) in &other.tokens {
            *self.tokens.entry(m.clone()).or_insert(0.0) += v;
        }
    }

    /// Mean cross-entropy per modality that had target tokens.
    pub fn means(&self) -> BTreeMap<String, f64> {
        self.sum
            .iter()
            .filter_map(|(m, s)| {
                let tokens = self.tokens.get(m).copied().unwrap_or(0.0);
                (tokens > 0.0).then(|| (m.clone(), s / tokens))
            })
            .collect()
    }

    /// Mean cross-entropy over every target token.
    pub fn overall(&self) -> f64 {
        let tokens: f64 = self.tokens.values().sum();
        self.sum.values().sum::<f64>() / tokens.max(1.0)
    }
}

/// The loss sums of `model` on already masked `batches`.
pub fn heldout_loss(
    model: &FourM,
    batches: &[Batch],
    options: &StepOptions,
) -> Result<LossSums, EvalError> {
    let mut sums = LossSums::default();
    for batch in batches {
        let out = model.forward(batch, options)?;
        for l in &out.modality_losses {
            *sums.sum.entry(l.modality.clone()).or_insert(0.0) += scalar(&l.sum);
            *sums.tokens.entry(l.modality.clone()).or_insert(0.0) += l.tokens as f64;
        }
    }
    Ok(sums)
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .ok()
        .and_then(|v| v.first().copied())
        .map_or(0.0, f64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modalities_without_targets_have_no_mean() {
        let mut a = LossSums::default();
        a.sum.insert("caption".into(), 6.0);
        a.tokens.insert("caption".into(), 3.0);
        a.sum.insert("det".into(), 0.0);
        a.tokens.insert("det".into(), 0.0);
        let mut b = a.clone();
        b.sum.insert("caption".into(), 2.0);
        a.add(&b);
        assert_eq!(
            a.means(),
            BTreeMap::from([("caption".to_string(), 8.0 / 6.0)])
        );
        assert_eq!(a.overall(), 8.0 / 6.0);
    }
}
