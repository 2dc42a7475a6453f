//! One data-parallel training step of a rank: agree on the global target counts, compute the
//! local gradient (accumulated over micro-batches, each normalised by the global counts, so the
//! ranks' gradients add up to the full batch's), then either
//!
//! * one all-reduce of the flat gradient where it lives ([`crate::reduce`]: the device buffer for
//!   a collective that takes it, the host storage of a CPU tensor in place), the loss, the
//!   per-modality losses and rank 0's control word in a small buffer of their own, then
//!   global-norm clipping and AdamW as tensor operations on the device: only the norm (a scalar)
//!   comes back to the host;
//! * or, with the optimizer state sharded (ZeRO-1), a reduce-scatter of the gradient on the host,
//!   AdamW over this rank's shard and an all-gather of the parameters (the host path; the
//!   collectives' device-memory reduce-scatter and all-gather are not used by the step yet).

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
use fourm_collective::{Collective, CollectiveError, DeviceMemory};
use fourm_model::optim::{AdamW, CosineSchedule, ParamLayout, global_norm};
use fourm_model::{Batch, FourM, ModelError, StepOptions, TargetCount};

use crate::reduce;

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
    /// The gradient's buffer could not be reached or handed over.
    #[error("the gradient's device buffer: {reason}")]
    Device {
        /// What failed.
        reason: String,
    },
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

impl StepError {
    pub(crate) fn device(reason: impl Into<String>) -> Self {
        Self::Device {
            reason: reason.into(),
        }
    }
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
    /// Gradient elements the step copied between device and host memory: 0 when the collective
    /// reduced the gradient in its own buffer (see [`crate::reduce`]).
    pub host_elements: usize,
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
    /// Threads per forward/backward (CPU).
    pub micro_batches: usize,
    /// Most samples per forward/backward: larger batches accumulate gradients.
    pub micro_batch_size: usize,
    /// With the optimizer state sharded: this rank's shard of the flat vector (the range
    /// [`AdamW`] covers).
    pub shard: Option<Range<usize>>,
}

/// A rank's gradient before the reduction.
struct LocalGradient {
    /// Flat, on the model's device.
    grads: Tensor<1>,
    /// This rank's share of the global loss.
    loss: f64,
    /// Its shares of each modality's global mean loss.
    shares: Vec<(String, f64)>,
}

/// The summed gradient: the whole vector on the device, or this rank's shard on the host.
// One value per step, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Flat {
    Device(Tensor<1>),
    Host(Vec<f32>),
}

/// What the reduction of a step gives the update.
struct Reduced {
    /// The summed gradient over `range` (the whole vector, or this rank's shard).
    grads: Flat,
    range: Range<usize>,
    loss: f64,
    parts: Vec<f32>,
    grad_norm: f64,
    checkpoint_requested: bool,
    host_elements: usize,
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

        // 2. Local gradient, accumulated over micro-batches.
        let n = self.layout.len();
        let LocalGradient {
            grads,
            loss: local_loss,
            shares,
        } = self.local_gradient(batch, &options)?;
        let mut extras: Vec<f32> = vec![local_loss as f32];
        // Each rank's modality losses are its share of the global mean: their sum is the mean.
        for m in &targets {
            let part = shares
                .iter()
                .find(|(name, _)| name == m)
                .map_or(0.0, |(_, l)| *l);
            extras.push(part as f32);
        }
        extras.push(if request_checkpoint && collective.rank() == 0 {
            1.0
        } else {
            0.0
        });

        // 3. The reduction: the gradient in one call where it lives, the scalars beside it.
        let reduced = match &self.shard {
            None => {
                let (grads, reduction) = reduce::all_reduce_sum(collective, grads)?;
                collective.all_reduce_sum(&mut extras)?;
                let checkpoint_requested = extras.pop().unwrap_or(0.0) > 0.5;
                let parts = extras.split_off(1);
                Reduced {
                    grad_norm: global_norm(&grads),
                    grads: Flat::Device(grads),
                    range: 0..n,
                    loss: f64::from(extras[0]),
                    parts,
                    checkpoint_requested,
                    host_elements: reduction.host_elements,
                }
            }
            Some(shard) => {
                // Sharded optimizer state goes through host slices (see the module docs).
                let copied = match reduce::memory_of(&grads.device()) {
                    Some(DeviceMemory::Host) => 0,
                    _ => 2 * n,
                };
                let mut flat = host_values(grads, "the gradient")?;
                collective.reduce_scatter_sum(&mut flat)?;
                let grads = flat[shard.clone()].to_vec();
                drop(flat);
                // The shard norms add up to the global norm; they ride with the scalars.
                extras.push(norm_sq(&grads) as f32);
                collective.all_reduce_sum(&mut extras)?;
                let norm = f64::from(extras.pop().unwrap_or(f32::NAN));
                let checkpoint_requested = extras.pop().unwrap_or(0.0) > 0.5;
                let parts = extras.split_off(1);
                Reduced {
                    grads: Flat::Host(grads),
                    range: shard.clone(),
                    loss: f64::from(extras[0]),
                    parts,
                    grad_norm: norm.max(0.0).sqrt(),
                    checkpoint_requested,
                    host_elements: copied,
                }
            }
        };
        let modality_loss: Vec<(String, f64)> = targets
            .iter()
            .zip(&reduced.parts)
            .zip(&counts)
            .filter(|(_, n)| **n > 0.0)
            .map(|((m, l), _)| (m.clone(), f64::from(*l)))
            .collect();

        // 4. Clipping, 5. AdamW.
        let Reduced {
            grads,
            range,
            loss,
            grad_norm,
            checkpoint_requested,
            host_elements,
            ..
        } = reduced;
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(StepError::NotFinite {
                step: self.step,
                loss,
                grad_norm,
            });
        }
        // torch's clip_grad_norm_: scale by max_norm / (‖g‖ + 1e-6) when that is below 1.
        let coef = (self.clip_grad > 0.0)
            .then(|| self.clip_grad / (grad_norm + 1e-6))
            .filter(|&c| c < 1.0);
        let lr = self.schedule.lr(self.step);
        let params = self.layout.flatten_params(&self.model);
        let device = params.device();
        let params = match grads {
            Flat::Device(grads) => {
                let grads = match coef {
                    Some(c) => grads.mul_scalar(c as f32),
                    None => grads,
                };
                self.adamw.step(params, grads, lr)
            }
            Flat::Host(mut grads) => {
                if let Some(c) = coef {
                    grads.iter_mut().for_each(|g| *g *= c as f32);
                }
                // This rank updates its shard; the all-gather brings every other rank's.
                let mut all = host_values(params, "the parameters")?;
                let shard = host_tensor(all[range.clone()].to_vec(), range.len(), &device);
                let grads = host_tensor(grads, range.len(), &device);
                let updated = host_values(self.adamw.step(shard, grads, lr), "the parameters")?;
                all[range.clone()].copy_from_slice(&updated);
                collective.all_gather(&mut all)?;
                host_tensor(all, n, &device)
            }
        };
        // A clone shares the parameter tensors; the old ones are dropped with it.
        self.model = self.layout.unflatten_into(self.model.clone(), params);
        self.step += 1;
        Ok(StepResult {
            loss,
            modality_loss,
            grad_norm,
            lr,
            checkpoint_requested,
            host_elements,
        })
    }

    /// This rank's gradient of `batch`, summed over micro-batches of at most `micro_batch_size`
    /// samples (each normalised by the global counts in `options`), on the model's device.
    fn local_gradient(
        &self,
        batch: &Batch,
        options: &StepOptions,
    ) -> Result<LocalGradient, StepError> {
        let parts = batch.batch_size.div_ceil(self.micro_batch_size.max(1));
        let mut sum: Option<Tensor<1>> = None;
        let mut loss = 0.0;
        let mut shares: Vec<(String, f64)> = Vec::new();
        for part in batch.split(parts.max(1)) {
            if part.batch_size == 0 {
                continue;
            }
            let out = self
                .model
                .gradients(&self.layout, &part, options, self.micro_batches)?;
            sum = Some(match sum {
                None => out.grads,
                Some(s) => s + out.grads,
            });
            loss += out.loss;
            for (m, l) in out.modality_losses {
                match shares.iter_mut().find(|(name, _)| *name == m) {
                    Some(entry) => entry.1 += l,
                    None => shares.push((m, l)),
                }
            }
        }
        // A rank without samples this step still takes part in the reductions.
        let grads =
            sum.unwrap_or_else(|| Tensor::zeros([self.layout.len()], &self.model.device().inner()));
        Ok(LocalGradient {
            grads,
            loss,
            shares,
        })
    }
}

fn norm_sq(values: &[f32]) -> f64 {
    values.iter().map(|g| f64::from(*g) * f64::from(*g)).sum()
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
pub(crate) fn host_values(t: Tensor<1>, what: &str) -> Result<Vec<f32>, ModelError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Batch {
            modality: "*".into(),
            reason: format!("reading {what}: {e:?}"),
        })
}

pub(crate) fn host_tensor(values: Vec<f32>, n: usize, device: &Device) -> Tensor<1> {
    debug_assert_eq!(values.len(), n);
    Tensor::from_data(TensorData::new(values, [n]), device)
}
