//! One data-parallel training step of a rank: agree on the global target counts, compute the
//! local gradient (micro-batches normalised by the global counts, so the ranks' gradients add up
//! to the full batch's), one all-reduce of the flat gradient (with the loss and rank 0's control
//! word riding along), global-norm clipping, AdamW with ml-4m's groups and schedule.

use burn::tensor::{Device, Tensor, TensorData};
use fourm_collective::{Collective, CollectiveError};
use fourm_model::optim::{AdamW, CosineSchedule, ParamLayout};
use fourm_model::{Batch, FourM, ModelError, StepOptions, TargetCount};

/// A failed step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The batch does not fit the model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The collective failed (a peer died, the coordinator aborted the generation...).
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// The loss or gradient is not finite.
    #[error("non-finite loss {loss} or gradient norm {grad_norm} at step {step}")]
    NotFinite {
        /// The step.
        step: u64,
        /// Loss.
        loss: f64,
        /// Gradient norm.
        grad_norm: f64,
    },
}

/// What a step produced.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// Loss of the global batch.
    pub loss: f64,
    /// Per-modality mean loss of the global batch (modalities with targets in it).
    pub modality_loss: Vec<(String, f64)>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Whether rank 0 asked every rank to checkpoint after this step.
    pub checkpoint_requested: bool,
}

/// A rank's model and optimizer.
pub struct TrainState {
    /// The model (on an autodiff device).
    pub model: FourM,
    /// Flat layout of its parameters.
    pub layout: ParamLayout,
    /// Optimizer state.
    pub adamw: AdamW,
    /// Learning-rate schedule (indexed by step).
    pub schedule: CosineSchedule,
    /// Completed steps.
    pub step: u64,
    /// Global-norm clipping threshold (0: none).
    pub clip_grad: f64,
    /// Concurrent micro-batches.
    pub micro_batches: usize,
}

impl TrainState {
    /// One step on this rank's `batch`. `request_checkpoint` is rank 0's vote.
    pub fn step(
        &mut self,
        batch: &Batch,
        options: &StepOptions,
        collective: &mut dyn Collective,
        request_checkpoint: bool,
    ) -> Result<StepResult, StepError> {
        let targets: Vec<String> = self
            .model
            .modalities()
            .targets()
            .map(|s| s.name.clone())
            .collect();
        let vocab: Vec<usize> = self
            .model
            .modalities()
            .targets()
            .map(|s| s.vocab_size)
            .collect();
        // 1. The global target counts, so that every rank normalises by the whole batch.
        let local = self.model.target_counts(batch, options)?;
        let mut counts: Vec<f32> = targets
            .iter()
            .map(|m| {
                local
                    .iter()
                    .find(|c| &c.modality == m)
                    .map_or(0.0, |c| c.tokens as f32)
            })
            .collect();
        collective.all_reduce_sum(&mut counts)?;
        let present: Vec<&TargetCount> = local.iter().collect();
        let global: Vec<TargetCount> = targets
            .iter()
            .zip(&vocab)
            .zip(&counts)
            .filter(|((m, _), _)| present.iter().any(|c| &c.modality == *m))
            .map(|((m, &v), &n)| TargetCount {
                modality: m.clone(),
                tokens: n.round() as usize,
                vocab: v,
            })
            .collect();
        let options = StepOptions {
            global_counts: Some(global),
            ..options.clone()
        };

        // 2. Local gradient.
        let out = self
            .model
            .gradients(&self.layout, batch, &options, self.micro_batches)?;

        // 3. One all-reduce: gradient, loss, control word.
        let n = self.layout.len();
        let device = out.grads.device();
        let mut flat = host_values(out.grads, "the gradient")?;
        flat.push(out.loss as f32);
        // Each rank's modality losses are its share of the global mean: their sum is the mean.
        for m in &targets {
            let part = out
                .modality_losses
                .iter()
                .find(|(name, _)| name == m)
                .map_or(0.0, |(_, l)| *l);
            flat.push(part as f32);
        }
        flat.push(if request_checkpoint && collective.rank() == 0 {
            1.0
        } else {
            0.0
        });
        collective.all_reduce_sum(&mut flat)?;
        let checkpoint_requested = flat.pop().unwrap_or(0.0) > 0.5;
        let parts = flat.split_off(n + 1);
        let loss = f64::from(flat.pop().unwrap_or(f32::NAN));
        let modality_loss: Vec<(String, f64)> = targets
            .iter()
            .zip(&parts)
            .zip(&counts)
            .filter(|(_, n)| **n > 0.0)
            .map(|((m, l), _)| (m.clone(), f64::from(*l)))
            .collect();

        // 4. Clipping, 5. AdamW.
        let grad_norm = flat
            .iter()
            .map(|g| f64::from(*g) * f64::from(*g))
            .sum::<f64>()
            .sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(StepError::NotFinite {
                step: self.step,
                loss,
                grad_norm,
            });
        }
        if self.clip_grad > 0.0 {
            let coef = self.clip_grad / (grad_norm + 1e-6);
            if coef < 1.0 {
                flat.iter_mut().for_each(|g| *g *= coef as f32);
            }
        }
        let grads = host_tensor(flat, n, &device);
        let lr = self.schedule.lr(self.step);
        let params = self
            .adamw
            .step(self.layout.flatten_params(&self.model), grads, lr);
        // A clone shares the parameter tensors; the old ones are dropped with it.
        self.model = self.layout.unflatten_into(self.model.clone(), params);
        self.step += 1;
        Ok(StepResult {
            loss,
            modality_loss,
            grad_norm,
            lr,
            checkpoint_requested,
        })
    }
}

impl TrainState {
    /// SHA-256 (hex) of the parameters, flattened in module-visit order as little-endian `f32`.
    pub fn param_digest(&self) -> Result<String, ModelError> {
        let values = host_values(self.layout.flatten_params(&self.model), "the parameters")?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(fourm_data::sha256_hex(&bytes))
    }
}

/// The values of a flat tensor on the host (`what` names it in the error).
fn host_values(t: Tensor<1>, what: &str) -> Result<Vec<f32>, ModelError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Batch {
            modality: "*".into(),
            reason: format!("reading {what}: {e:?}"),
        })
}

fn host_tensor(values: Vec<f32>, n: usize, device: &Device) -> Tensor<1> {
    debug_assert_eq!(values.len(), n);
    Tensor::from_data(TensorData::new(values, [n]), device)
}
