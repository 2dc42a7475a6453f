//! One device's share of a training step: forward and backward over micro-batches, gradients
//! summed into one flat vector in module-visit order.
//!
//! The micro-batches' losses are normalised by the target counts of the whole batch (see
//! [`LossWeights`](crate::LossWeights)), so their gradients add up to the full batch's gradient.
//! On the CPU backend most element-wise kernels are single-threaded; running the micro-batches on
//! their own threads (each on a fork of the model, sharing its weights) keeps every core busy.

use burn::module::Module;
use burn::tensor::Tensor;

use crate::batch::Batch;
use crate::error::ModelError;
use crate::fourm::{FourM, StepOptions};
use crate::loss::{TargetCount, sum_counts};
use crate::optim::ParamLayout;
use crate::selection::{DecoderMasking, plan_decoder};

/// Gradients and losses of one batch.
#[derive(Debug)]
pub struct StepGradients {
    /// Flat gradient in the layout's order.
    pub grads: Tensor<1>,
    /// Total loss of the batch (under the options' normalisation).
    pub loss: f64,
    /// Per decoder modality: mean cross-entropy over the batch's target tokens.
    pub modality_losses: Vec<(String, f64)>,
    /// Target tokens per decoder modality (the normaliser used).
    pub counts: Vec<TargetCount>,
}

impl FourM {
    /// Target tokens per decoder modality of `batch` (host-side planning only).
    pub fn target_counts(
        &self,
        batch: &Batch,
        options: &StepOptions,
    ) -> Result<Vec<TargetCount>, ModelError> {
        batch.validate(self.modalities())?;
        let order = self.decoder_order(batch, options.decoder_order.as_deref())?;
        let masking = DecoderMasking {
            sep_mask: self.config().decoder_sep_mask,
            causal: self.config().decoder_causal_mask,
        };
        let plan = plan_decoder(
            batch,
            self.modalities(),
            &order,
            options.num_decoder_tokens,
            masking,
        )?;
        let specs: Vec<_> = self.modalities().iter().collect();
        Ok(plan
            .per_modality
            .iter()
            .map(|s| TargetCount {
                modality: specs[s.modality].name.clone(),
                tokens: s.slots.len(),
                vocab: specs[s.modality].vocab_size,
            })
            .collect())
    }

    /// Forward and backward over `batch` split into `parallel` micro-batches run on their own
    /// threads (1: in the calling thread). The model must live on an autodiff device.
    pub fn gradients(
        &self,
        layout: &ParamLayout,
        batch: &Batch,
        options: &StepOptions,
        parallel: usize,
    ) -> Result<StepGradients, ModelError> {
        let parts = batch.split(parallel);
        let counts = match &options.global_counts {
            Some(c) => c.clone(),
            None => {
                let per_part = parts
                    .iter()
                    .map(|p| self.target_counts(p, options))
                    .collect::<Result<Vec<_>, _>>()?;
                sum_counts(per_part.iter().map(Vec::as_slice))
            }
        };
        let options = StepOptions {
            global_counts: Some(counts.clone()),
            ..options.clone()
        };
        let results: Vec<Result<PartResult, ModelError>> = if parts.len() == 1 {
            vec![part_gradients(self, layout, &parts[0], &options)]
        } else {
            let device = self.device();
            let replicas: Vec<FourM> = parts.iter().map(|_| self.clone().fork(&device)).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = replicas
                    .iter()
                    .zip(&parts)
                    .map(|(replica, part)| {
                        scope.spawn(|| part_gradients(replica, layout, part, &options))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("micro-batch thread panicked"))
                    .collect()
            })
        };
        let mut grads: Option<Tensor<1>> = None;
        let mut loss = 0.0;
        let mut sums: Vec<(String, f64)> =
            counts.iter().map(|c| (c.modality.clone(), 0.0)).collect();
        for r in results {
            let r = r?;
            grads = Some(match grads {
                Some(g) => g + r.grads,
                None => r.grads,
            });
            loss += r.loss;
            for (name, s) in r.sums {
                if let Some(entry) = sums.iter_mut().find(|(n, _)| *n == name) {
                    entry.1 += s;
                }
            }
        }
        let modality_losses = sums
            .into_iter()
            .zip(&counts)
            .map(|((name, s), c)| {
                (
                    name,
                    if c.tokens == 0 {
                        0.0
                    } else {
                        s / c.tokens as f64
                    },
                )
            })
            .collect();
        Ok(StepGradients {
            grads: grads.expect("at least one micro-batch"),
            loss,
            modality_losses,
            counts,
        })
    }
}

struct PartResult {
    grads: Tensor<1>,
    loss: f64,
    sums: Vec<(String, f64)>,
}

fn part_gradients(
    model: &FourM,
    layout: &ParamLayout,
    batch: &Batch,
    options: &StepOptions,
) -> Result<PartResult, ModelError> {
    let out = model.forward(batch, options)?;
    let loss = out.loss.clone().into_scalar::<f32>() as f64;
    let sums = out
        .modality_losses
        .iter()
        .map(|l| {
            (
                l.modality.clone(),
                l.sum.clone().into_scalar::<f32>() as f64,
            )
        })
        .collect();
    let grads = layout.flatten_grads(model, &out.loss.backward());
    Ok(PartResult { grads, loss, sums })
}
