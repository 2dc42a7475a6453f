//! Decoder embeddings (`decoder_embeddings.py`). The token table doubles as the output head
//! (`to_logits` is tied to `token_emb`), and the modality embedding is the encoder's.

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::{Device, Tensor};

use crate::embed::encoder::{int_tensor, position_buffer, position_rows};
use crate::init::{InitRng, xavier_bound};
use crate::modality::ModalitySpec;
use crate::precision::matmul;
use crate::selection::ModalitySlots;

/// Embedding and output head of one target modality.
#[derive(Module, Debug)]
pub struct DecoderEmbedding {
    /// Token table `[vocab, d]`, also the output projection (`to_logits.weight`).
    pub token_emb: Embedding,
    /// Sin-cos table `[1, rows, d]`, a buffer.
    pub pos_emb: Param<Tensor<3>>,
}

impl DecoderEmbedding {
    /// ml-4m initialises the tied table last as `to_logits`: xavier-uniform over `(vocab, d)`.
    pub fn new(spec: &ModalitySpec, dim: usize, rng: &mut InitRng) -> Self {
        let pos_emb = position_buffer(spec, dim, rng);
        let bound = xavier_bound(dim, spec.vocab_size);
        Self {
            token_emb: Embedding {
                weight: rng.uniform([spec.vocab_size, dim], bound),
            },
            pos_emb,
        }
    }

    /// Teacher-forced input rows: token embeddings of `slots.input_ids`, `[n, d]`.
    pub fn token_rows(&self, slots: &ModalitySlots, device: &Device) -> Tensor<2> {
        self.token_emb
            .weight
            .val()
            .select(0, int_tensor(slots.input_ids.clone(), device))
    }

    /// Position + modality rows of the kept slots, `[n, d]`.
    pub fn position_rows(
        &self,
        mod_emb: &Param<Tensor<3>>,
        slots: &ModalitySlots,
        device: &Device,
    ) -> Tensor<2> {
        position_rows(&self.pos_emb, mod_emb, &slots.pos_rows, device)
    }

    /// Logits `y · token_embᵀ`: `[n, d] -> [n, vocab]`.
    pub fn logits(&self, y: Tensor<2>) -> Tensor<2> {
        matmul(y, self.token_emb.weight.val().transpose())
    }
}
