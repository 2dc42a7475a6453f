//! Encoder embeddings (`encoder_embeddings.py`): token or patch content `x`, and the sum of
//! position and modality embeddings `emb`, kept apart until the encoder input.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::batch::{ModalityBatch, ModalityData};
use crate::config::SEQ_POS_EMB_ROWS;
use crate::init::InitRng;
use crate::modality::{ModalityKind, ModalitySpec};
use crate::posemb::{sincos_1d, sincos_2d};
use crate::precision::linear;
use crate::selection::ModalitySlots;

/// Embedding of one modality on the encoder side.
#[derive(Module, Debug)]
pub struct EncoderEmbedding {
    /// Token table `[vocab, d]` (token modalities).
    pub token_emb: Option<Embedding>,
    /// Patch projection `[c·p², d]`, no bias (pixel modalities).
    pub proj: Option<Linear>,
    /// Modality embedding `[1, 1, d]` (shared with the decoder embedding of the same modality).
    pub mod_emb: Param<Tensor<3>>,
    /// Sin-cos table `[1, rows, d]`, a buffer: grid size rows for images, 512 for sequences.
    pub pos_emb: Param<Tensor<3>>,
}

impl EncoderEmbedding {
    /// Initialised as ml-4m: tokens `N(0, 0.02)`, patch projection xavier, `mod_emb` `N(0, 0.02)`.
    pub fn new(spec: &ModalitySpec, dim: usize, rng: &mut InitRng) -> Self {
        let pos_emb = position_buffer(spec, dim, rng);
        let mod_emb = rng.normal([1, 1, dim]);
        let (token_emb, proj) = match spec.kind {
            ModalityKind::ImagePixels {
                patch_size,
                channels,
                ..
            } => (
                None,
                Some(rng.xavier_linear(channels * patch_size * patch_size, dim, false)),
            ),
            _ => (
                Some(Embedding {
                    weight: rng.normal([spec.vocab_size, dim]),
                }),
                None,
            ),
        };
        Self {
            token_emb,
            proj,
            mod_emb,
            pos_emb,
        }
    }

    /// Content and position+modality rows for the kept tokens of this modality.
    ///
    /// # Shapes
    /// - both outputs `[slots.positions.len(), d]`
    pub fn rows(
        &self,
        spec: &ModalitySpec,
        data: &ModalityBatch,
        slots: &ModalitySlots,
        device: &Device,
    ) -> (Tensor<2>, Tensor<2>) {
        let n = slots.positions.len();
        let x = match (&self.token_emb, &self.proj, &data.data) {
            (Some(table), _, ModalityData::Tokens(ids)) => {
                let picked: Vec<i64> = slots.positions.iter().map(|&p| ids[p]).collect();
                table.weight.val().select(0, int_tensor(picked, device))
            }
            (_, Some(proj), ModalityData::Pixels(px)) => {
                let patches = extract_patches(spec, px, &slots.positions);
                let width = patches.len() / n;
                linear(
                    proj,
                    Tensor::from_data(TensorData::new(patches, [n, width]), device),
                )
            }
            _ => unreachable!("batch validated against the registry"),
        };
        (
            x,
            position_rows(&self.pos_emb, &self.mod_emb, &slots.pos_rows, device),
        )
    }
}

impl EncoderEmbedding {
    /// The patches at `positions` (`b · patches + patch`) of `[batch, c, h, w]` pixels, each laid
    /// out `(ph pw c)` as ml-4m's patchify: `[positions.len() · c·p²]`.
    pub fn patches(spec: &ModalitySpec, px: &[f32], positions: &[usize]) -> Vec<f32> {
        extract_patches(spec, px, positions)
    }
}

/// `pos_emb[rows] + mod_emb`, `[rows.len(), d]`.
pub(crate) fn position_rows(
    pos_emb: &Param<Tensor<3>>,
    mod_emb: &Param<Tensor<3>>,
    rows: &[i64],
    device: &Device,
) -> Tensor<2> {
    let [_, table_rows, dim] = pos_emb.dims();
    let pos = pos_emb
        .val()
        .reshape([table_rows, dim])
        .select(0, int_tensor(rows.to_vec(), device));
    pos + mod_emb.val().reshape([1, dim])
}

/// The sin-cos buffer of a modality, `[1, rows, d]`: the grid for images, 512 rows for
/// sequences.
pub(crate) fn position_buffer(
    spec: &ModalitySpec,
    dim: usize,
    rng: &mut InitRng,
) -> Param<Tensor<3>> {
    match spec.kind {
        ModalityKind::ImageTokens { grid } | ModalityKind::ImagePixels { grid, .. } => rng
            .buffer([1, grid[0] * grid[1], dim], move || {
                sincos_2d(grid[0], grid[1], dim)
            }),
        ModalityKind::Sequence { .. } => rng.buffer([1, SEQ_POS_EMB_ROWS, dim], move || {
            sincos_1d(SEQ_POS_EMB_ROWS, dim)
        }),
    }
}

/// A 1-D int tensor.
pub(crate) fn int_tensor(values: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// Cuts the patches at `positions` (`b · patches + patch`) out of `[batch, c, h, w]` pixels,
/// laid out `(ph pw c)` inside a patch as ml-4m's `rearrange('b c (nh ph) (nw pw) -> b (nh nw)
/// (ph pw c)')`.
fn extract_patches(spec: &ModalitySpec, px: &[f32], positions: &[usize]) -> Vec<f32> {
    let ModalityKind::ImagePixels {
        grid,
        patch_size: p,
        channels: c,
    } = spec.kind
    else {
        unreachable!("pixel modality")
    };
    let (h, w) = (grid[0] * p, grid[1] * p);
    let per_sample = grid[0] * grid[1];
    let mut out = Vec::with_capacity(positions.len() * p * p * c);
    for &pos in positions {
        let (b, patch) = (pos / per_sample, pos % per_sample);
        let (gy, gx) = (patch / grid[1], patch % grid[1]);
        for ph in 0..p {
            for pw in 0..p {
                for ch in 0..c {
                    let (y, x) = (gy * p + ph, gx * p + pw);
                    out.push(px[((b * c + ch) * h + y) * w + x]);
                }
            }
        }
    }
    out
}
