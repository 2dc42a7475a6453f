//! The encoder side of a generation step (ml-4m `forward_mask_encoder_generation`) and full
//! decoder passes against its output.
//!
//! The encoder reads every visible token of every modality in the state, in sorted-name order;
//! the number of encoder slots is the largest visible count over the batch, samples with fewer
//! get zeroed padding slots that are masked as keys. The decoder then attends to
//! `decoder_proj_context(encoder output) + emb`.

use burn::tensor::{Device, Tensor, TensorData};

use crate::batch::ModalityBatch;
use crate::config::SEQ_POS_EMB_ROWS;
use crate::embed::int_tensor;
use crate::error::ModelError;
use crate::fourm::FourM;
use crate::generate::state::GenState;
use crate::layers::MASKED;
use crate::selection::ModalitySlots;

/// What the decoder cross-attends to.
#[derive(Debug, Clone)]
pub struct EncodedContext {
    /// `decoder_proj_context(encoder output) + emb`, `[b, n, d]`; `None` when no token of any
    /// sample is visible (the decoder then has nothing to attend to, as in ml-4m where the
    /// cross-attention over zero keys adds zero).
    pub context: Option<Tensor<3>>,
    /// `[b, 1, 1, n]` additive bias masking padding slots as keys (`None`: no padding).
    pub cross_bias: Option<Tensor<4>>,
}

impl EncodedContext {
    /// Encodes the visible tokens of `state`.
    pub fn encode(model: &FourM, state: &GenState) -> Result<Self, ModelError> {
        let device = model.device();
        let dim = model.config().dim;
        let batch = state.batch_size();
        // Per modality: (registry index, visible (sample, position, position row)).
        let mut parts = Vec::new();
        let mut counts = vec![0usize; batch];
        for (name, m) in state.iter() {
            let spec = state.spec(name)?;
            let index = model
                .modalities()
                .index_of(name)
                .ok_or_else(|| ModelError::generation(name, "not a modality of this model"))?;
            let mut visible = Vec::new();
            for (b, count) in counts.iter_mut().enumerate() {
                let mut rank = 0usize;
                for p in 0..m.len {
                    if m.input_mask[b * m.len + p] {
                        continue;
                    }
                    let row = if spec.is_sequence() {
                        rank += 1;
                        if rank > SEQ_POS_EMB_ROWS {
                            return Err(ModelError::generation(
                                name,
                                format!(
                                    "more than {SEQ_POS_EMB_ROWS} visible tokens in sample {b}"
                                ),
                            ));
                        }
                        rank - 1
                    } else {
                        p
                    };
                    visible.push((b, p, row));
                    *count += 1;
                }
            }
            parts.push((name, index, visible));
        }
        let slots = counts.iter().copied().max().unwrap_or(0);
        if slots == 0 {
            return Ok(Self {
                context: None,
                cross_bias: None,
            });
        }

        let mut next = vec![0usize; batch];
        let mut slot_rows = vec![-1i64; batch * slots];
        let (mut xs, mut embs) = (Vec::new(), Vec::new());
        let mut offset = 0i64;
        for (name, index, visible) in parts.into_iter().filter(|p| !p.2.is_empty()) {
            let m = state.get(name).expect("iterated");
            let mut s = ModalitySlots {
                modality: index,
                ..Default::default()
            };
            for &(b, p, row) in &visible {
                s.positions.push(b * m.len + p);
                s.pos_rows.push(row as i64);
                slot_rows[b * slots + next[b]] = offset + s.positions.len() as i64 - 1;
                next[b] += 1;
            }
            offset += s.positions.len() as i64;
            let data = ModalityBatch {
                data: m.data.clone(),
                input_mask: Vec::new(),
                target_mask: Vec::new(),
                decoder_attention_mask: Vec::new(),
            };
            let spec = state.spec(name)?;
            let (x, emb) = model.encoder_embeddings[index].rows(spec, &data, &s, &device);
            xs.push(x);
            embs.push(emb);
        }
        // Padding slots read the zero row appended after all modality rows.
        let pad: Vec<bool> = slot_rows.iter().map(|&r| r < 0).collect();
        let slot_rows: Vec<i64> = slot_rows
            .into_iter()
            .map(|r| if r < 0 { offset } else { r })
            .collect();
        let scatter = |mut rows: Vec<Tensor<2>>| {
            rows.push(Tensor::zeros([1, dim], &device));
            Tensor::cat(rows, 0)
                .select(0, int_tensor(slot_rows.clone(), &device))
                .reshape([batch, slots, dim])
        };
        let (x, emb) = (scatter(xs), scatter(embs));
        let cross_bias = key_bias(&pad, batch, slots, &device);
        let out = model.encode(x + emb.clone(), cross_bias.clone());
        let context = model.decoder_proj_context.forward(out) + emb;
        Ok(Self {
            context: Some(context),
            cross_bias,
        })
    }

    /// Runs the decoder blocks and `decoder_norm` on `y` (`[b, m, d]`) against this context,
    /// with an optional self-attention bias (`[b or 1, 1, m, m]`).
    pub fn decode(&self, model: &FourM, y: Tensor<3>, self_bias: Option<Tensor<4>>) -> Tensor<3> {
        match &self.context {
            Some(context) => model.decode(y, context.clone(), self_bias, self.cross_bias.clone()),
            None => {
                let y = model.decoder.iter().fold(y, |y, block| {
                    let y = y.clone()
                        + block
                            .self_attn
                            .forward(block.norm1.forward(y), self_bias.clone());
                    y.clone() + block.mlp.forward(block.norm2.forward(y))
                });
                model.decoder_norm.forward(y)
            }
        }
    }

    /// Logits of an image-like target at `positions` (the same count per sample): the decoder
    /// reads the mask token plus the position and modality embedding of each position, with full
    /// self-attention among them (ml-4m `forward_enc_dec_maskgit_batched`). Returns
    /// `[b, n, vocab]` row-major on the host.
    pub fn image_logits(
        &self,
        model: &FourM,
        target: &str,
        positions: &[Vec<usize>],
    ) -> Result<Vec<f32>, ModelError> {
        let device = model.device();
        let dim = model.config().dim;
        let index = model
            .modalities()
            .index_of(target)
            .ok_or_else(|| ModelError::generation(target, "not a modality of this model"))?;
        let (b, n) = (positions.len(), positions.first().map_or(0, Vec::len));
        if n == 0 {
            return Ok(Vec::new());
        }
        let slots = ModalitySlots {
            modality: index,
            pos_rows: positions.iter().flatten().map(|&p| p as i64).collect(),
            ..Default::default()
        };
        let head = &model.decoder_embeddings[model.decoder_index(index)];
        let emb = head.position_rows(&model.encoder_embeddings[index].mod_emb, &slots, &device);
        let x = model
            .mask_token
            .val()
            .reshape([1, dim])
            .expand([b * n, dim]);
        let y = self.decode(model, (x + emb).reshape([b, n, dim]), None);
        Ok(host(head.logits(y.reshape([b * n, dim]))))
    }
}

/// A 2-D float tensor read back to the host.
pub(crate) fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// `[b, 1, 1, n]` bias masking the padding slots (`None` when there are none).
fn key_bias(pad: &[bool], batch: usize, slots: usize, device: &Device) -> Option<Tensor<4>> {
    if !pad.contains(&true) {
        return None;
    }
    let values: Vec<f32> = pad.iter().map(|&p| if p { MASKED } else { 0.0 }).collect();
    Some(Tensor::from_data(
        TensorData::new(values, [batch, 1, 1, slots]),
        device,
    ))
}
