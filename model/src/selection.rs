//! Host-side token selection (ml-4m `forward_mask_encoder` / `forward_mask_decoder`).
//!
//! ml-4m concatenates every modality's tokens, sorts `mask + arange·1e-6` and keeps the first
//! `N` (encoder) or `M` (decoder) slots: a *stable* partition, visible tokens first in
//! concatenation order, then masked ones, which become zeroed padding slots. The masks are small
//! integer data, so the plan is computed here on the host, exactly, and the device only gathers
//! the embedding rows it names.

use crate::batch::{Batch, ModalityBatch};
use crate::config::SEQ_POS_EMB_ROWS;
use crate::error::ModelError;
use crate::modality::{Modalities, ModalityKind, ModalitySpec};

/// The slots of one modality that survive selection (non-padding), in slot order.
#[derive(Debug, Clone, Default)]
pub struct ModalitySlots {
    /// Index of the modality in the model's registry.
    pub modality: usize,
    /// `b · tensor_len + p`: where each kept token sits in the modality's batch tensor.
    pub positions: Vec<usize>,
    /// Row of the position table each token reads (grid index, or rank for sequences).
    pub pos_rows: Vec<i64>,
    /// `b · slots + n`: the flat slot each token lands in.
    pub slots: Vec<i64>,
    /// Decoder only: the token id fed as input (sequences, teacher forcing).
    pub input_ids: Vec<i64>,
    /// Decoder only: the target id of each slot.
    pub targets: Vec<i64>,
}

/// Result of the stable selection over a concatenation of modalities.
#[derive(Debug, Clone)]
pub struct SelectionPlan {
    /// Samples.
    pub batch: usize,
    /// Slots per sample (`N` or `M`).
    pub slots: usize,
    /// `[batch, slots]`: index of each slot in the concatenation (ml-4m `ids_keep`).
    pub ids_keep: Vec<i64>,
    /// `[batch, slots]`: true = padding slot.
    pub pad: Vec<bool>,
    /// `[batch, slots]`: modality id of each slot, −1 for padding.
    pub mod_mask: Vec<i64>,
    /// Per modality (concatenation order) the kept tokens.
    pub per_modality: Vec<ModalitySlots>,
    /// `[batch, slots]`: row of `cat(rows of each modality..., zero row)` for each slot.
    pub slot_rows: Vec<i64>,
    /// Decoder only: `[batch, slots]` target ids (0 at padding).
    pub target_ids: Vec<i64>,
    /// Decoder only: `[batch, slots, slots]` self-attention mask, true = may not attend.
    pub attention_masked: Vec<bool>,
}

impl SelectionPlan {
    /// Number of kept (non-padding) rows over all modalities.
    pub fn kept_rows(&self) -> usize {
        self.per_modality.iter().map(|m| m.positions.len()).sum()
    }
}

/// One candidate token of the concatenation.
#[derive(Clone, Copy)]
struct Candidate {
    part: usize,
    pos: usize,
    masked: bool,
    attention: i64,
    pos_row: i64,
    input_id: i64,
    target: i64,
}

/// Plans the encoder input: modalities of the batch in sorted order, `num_tokens` slots.
pub fn plan_encoder(
    batch: &Batch,
    modalities: &Modalities,
    num_tokens: usize,
) -> Result<SelectionPlan, ModelError> {
    let parts: Vec<(usize, &ModalitySpec, &ModalityBatch)> = batch
        .modalities
        .iter()
        .map(|(name, m)| {
            let idx = modalities
                .index_of(name)
                .ok_or_else(|| ModelError::batch(name, "unknown modality"))?;
            Ok((idx, modalities.get(name).expect("indexed"), m))
        })
        .collect::<Result<_, ModelError>>()?;
    let rows = |b: usize| -> Result<Vec<Candidate>, ModelError> {
        let mut out = Vec::new();
        for (part, (_, spec, m)) in parts.iter().enumerate() {
            let len = spec.tensor_len();
            let mask = &m.input_mask[b * len..(b + 1) * len];
            let mut rank = 0i64;
            for (p, &masked) in mask.iter().enumerate() {
                let pos_row = match spec.kind {
                    ModalityKind::Sequence { .. } if !masked => {
                        rank += 1;
                        if rank as usize > SEQ_POS_EMB_ROWS {
                            return Err(ModelError::batch(
                                &spec.name,
                                format!(
                                    "more than {SEQ_POS_EMB_ROWS} visible tokens in sample {b}"
                                ),
                            ));
                        }
                        rank - 1
                    }
                    ModalityKind::Sequence { .. } => 0,
                    _ => p as i64,
                };
                let input_id = m.ids().get(b * len + p).copied().unwrap_or(0);
                out.push(Candidate {
                    part,
                    pos: p,
                    masked,
                    attention: 0,
                    pos_row,
                    input_id,
                    target: 0,
                });
            }
        }
        Ok(out)
    };
    let parts_meta: Vec<(usize, usize)> = parts
        .iter()
        .map(|(idx, spec, _)| (*idx, spec.tensor_len()))
        .collect();
    select(
        batch.batch_size,
        num_tokens,
        &parts_meta,
        &parts.iter().map(|p| p.1.id()).collect::<Vec<_>>(),
        rows,
        None,
    )
}

/// How the decoder's self-attention mask is built.
#[derive(Debug, Clone, Copy)]
pub struct DecoderMasking {
    /// Forbid attention across modalities.
    pub sep_mask: bool,
    /// Global causal mask instead of the per-modality cumsum rule.
    pub causal: bool,
}

/// Plans the decoder input for the target modalities in `order` (registry indices), `num_tokens`
/// slots. Sequences are shifted inside their padded tensor (teacher forcing): slot `p` reads
/// token `p` and predicts token `p + 1`, valid when both are targets.
pub fn plan_decoder(
    batch: &Batch,
    modalities: &Modalities,
    order: &[usize],
    num_tokens: usize,
    masking: DecoderMasking,
) -> Result<SelectionPlan, ModelError> {
    let specs: Vec<&ModalitySpec> = modalities.iter().collect();
    let parts: Vec<(usize, &ModalitySpec, &ModalityBatch)> = order
        .iter()
        .map(|&idx| {
            let spec = specs[idx];
            let m = batch.modalities.get(&spec.name).ok_or_else(|| {
                ModelError::batch(&spec.name, "decoder modality missing from the batch")
            })?;
            if spec.input_only {
                return Err(ModelError::batch(
                    &spec.name,
                    "input-only modality cannot be decoded",
                ));
            }
            Ok((idx, spec, m))
        })
        .collect::<Result<_, ModelError>>()?;
    let rows = |b: usize| -> Result<Vec<Candidate>, ModelError> {
        let mut out = Vec::new();
        for (part, (_, spec, m)) in parts.iter().enumerate() {
            let len = spec.tensor_len();
            let range = b * len..(b + 1) * len;
            let (tm, am, ids) = (
                &m.target_mask[range.clone()],
                &m.decoder_attention_mask[range.clone()],
                &m.ids()[range],
            );
            match spec.kind {
                ModalityKind::Sequence { max_length } => {
                    let mut rank = -1i64;
                    for p in 0..len - 1 {
                        if !tm[p] {
                            rank += 1;
                        }
                        let pos_row = if tm[p] || rank as usize >= max_length {
                            0
                        } else {
                            rank
                        };
                        out.push(Candidate {
                            part,
                            pos: p,
                            masked: tm[p] || tm[p + 1],
                            attention: i64::from(am[p]),
                            pos_row,
                            input_id: ids[p],
                            target: ids[p + 1],
                        });
                    }
                }
                _ => {
                    for p in 0..len {
                        out.push(Candidate {
                            part,
                            pos: p,
                            masked: tm[p],
                            attention: i64::from(am[p]),
                            pos_row: p as i64,
                            input_id: 0,
                            target: ids[p],
                        });
                    }
                }
            }
        }
        Ok(out)
    };
    let parts_meta: Vec<(usize, usize)> = parts
        .iter()
        .map(|(idx, spec, _)| (*idx, spec.tensor_len()))
        .collect();
    let ids: Vec<i64> = parts.iter().map(|p| p.1.id()).collect();
    select(
        batch.batch_size,
        num_tokens,
        &parts_meta,
        &ids,
        rows,
        Some(masking),
    )
}

/// The stable selection shared by encoder and decoder.
fn select(
    batch: usize,
    num_tokens: usize,
    parts: &[(usize, usize)],
    part_ids: &[i64],
    candidates: impl Fn(usize) -> Result<Vec<Candidate>, ModelError>,
    decoder: Option<DecoderMasking>,
) -> Result<SelectionPlan, ModelError> {
    let mut per_modality: Vec<ModalitySlots> = parts
        .iter()
        .map(|&(modality, _)| ModalitySlots {
            modality,
            ..Default::default()
        })
        .collect();
    let mut plan = SelectionPlan {
        batch,
        slots: 0,
        ids_keep: Vec::new(),
        pad: Vec::new(),
        mod_mask: Vec::new(),
        per_modality: Vec::new(),
        slot_rows: Vec::new(),
        target_ids: Vec::new(),
        attention_masked: Vec::new(),
    };
    // (part, index within the part's kept rows) per slot; None for padding.
    let mut slot_part: Vec<Option<(usize, usize)>> = Vec::new();
    for b in 0..batch {
        let row = candidates(b)?;
        let slots = num_tokens.min(row.len());
        plan.slots = slots;
        let order = row
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.masked)
            .chain(row.iter().enumerate().filter(|(_, c)| c.masked))
            .take(slots);
        let mut attention = Vec::with_capacity(slots);
        let mut mod_pre = Vec::with_capacity(slots);
        for (n, (j, c)) in order.enumerate() {
            let id = part_ids[c.part];
            plan.ids_keep.push(j as i64);
            plan.pad.push(c.masked);
            plan.mod_mask.push(if c.masked { -1 } else { id });
            plan.target_ids.push(if c.masked { 0 } else { c.target });
            attention.push(c.attention);
            mod_pre.push(id);
            if c.masked {
                slot_part.push(None);
                continue;
            }
            let m = &mut per_modality[c.part];
            slot_part.push(Some((c.part, m.positions.len())));
            m.positions.push(b * parts[c.part].1 + c.pos);
            m.pos_rows.push(c.pos_row);
            m.slots.push((b * slots + n) as i64);
            if decoder.is_some() {
                m.input_ids.push(c.input_id);
                m.targets.push(c.target);
            }
        }
        if let Some(masking) = decoder {
            let mut cumsum = 0i64;
            let limits: Vec<i64> = attention
                .iter()
                .map(|a| {
                    cumsum += a;
                    cumsum
                })
                .collect();
            for i in 0..slots {
                for j in 0..slots {
                    let blocked = if masking.causal {
                        j > i
                    } else {
                        j as i64 >= limits[i]
                    };
                    plan.attention_masked
                        .push(blocked || (masking.sep_mask && mod_pre[i] != mod_pre[j]));
                }
            }
        }
    }
    let mut offsets = Vec::with_capacity(per_modality.len());
    let mut total = 0;
    for m in &per_modality {
        offsets.push(total);
        total += m.positions.len();
    }
    plan.slot_rows = slot_part
        .iter()
        .map(|s| s.map_or(total, |(part, i)| offsets[part] + i) as i64)
        .collect();
    plan.per_modality = per_modality;
    Ok(plan)
}
