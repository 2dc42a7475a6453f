//! Autoregressive decoding of a sequence target (ml-4m `autoregressive_step_batched` and its
//! guided variant).
//!
//! The encoder runs once. The decoder's inputs are the target's slots (positions still to be
//! generated, ascending): slot `i` reads the token decoded at slot `i − 1` (the first reads the
//! target's first token, `[S_1]`) plus the position embedding of rank `i` (0 from `max_length`
//! on) and the modality embedding, under a causal mask. Decoding stops when every sample has
//! produced the stop token, or after `min(max_tokens, slots)` tokens. The decoded ids are then
//! merged into the input through the sentinels ([`merge_spans`](super::span::merge_spans)).
//!
//! Without the key/value cache every token re-runs the decoder over the whole prefix, as ml-4m
//! does; with it each token runs one row through the decoder.

use burn::tensor::Tensor;
use rand::Rng;

use crate::embed::{DecoderEmbedding, int_tensor};
use crate::error::ModelError;
use crate::fourm::FourM;
use crate::generate::chain::Stop;
use crate::generate::context::{EncodedContext, host};
use crate::generate::generator::StepSettings;
use crate::generate::guidance::{combine, is_guided, unconditional};
use crate::generate::hook::{GenerationEvent, GenerationHook, TokenStep};
use crate::generate::kv_cache::{DecoderCache, full_causal_bias};
use crate::generate::sampling::sample_rows;
use crate::generate::span::merged_sequence;
use crate::generate::state::GenState;
use crate::modality::ModalityKind;
use crate::selection::ModalitySlots;

/// Decodes the sequence target `target` and merges it into the state.
pub(crate) fn autoregressive(
    settings: &StepSettings<'_>,
    state: &mut GenState,
    target: &str,
    stop: Stop,
    kv_cache: bool,
    rng: &mut impl Rng,
    hook: &mut dyn GenerationHook,
) -> Result<(), ModelError> {
    let model = settings.model;
    let spec = state.spec(target)?.clone();
    let ModalityKind::Sequence { max_length } = spec.kind else {
        return Err(ModelError::generation(target, "not a sequence modality"));
    };
    let slots = state.remaining_positions(target)?;
    let n = slots[0].len();
    if n == 0 {
        return Err(ModelError::generation(target, "nothing left to generate"));
    }
    let current = state
        .get(target)
        .expect("remaining positions exist")
        .clone();
    let batch = state.batch_size();
    let index = model
        .modalities()
        .index_of(target)
        .ok_or_else(|| ModelError::generation(target, "not a modality of this model"))?;

    // Decoder position + modality embeddings of every slot, `[b, n, d]`.
    let dim = model.config().dim;
    let head = &model.decoder_embeddings[model.decoder_index(index)];
    let ranks: Vec<i64> = (0..n)
        .map(|i| if i >= max_length { 0 } else { i as i64 })
        .collect();
    let rows = ModalitySlots {
        modality: index,
        pos_rows: ranks.repeat(batch),
        ..Default::default()
    };
    let emb = head
        .position_rows(
            &model.encoder_embeddings[index].mod_emb,
            &rows,
            &model.device(),
        )
        .reshape([batch, n, dim]);
    let decoder = SlotDecoder { model, head, emb };

    let ids = current.ids();
    let first: Vec<i64> = (0..batch)
        .map(|b| ids[b * current.len + slots[b][0]])
        .collect();
    let stop_token = match stop {
        Stop::FinalSentinel => Some(ids[slots[0][n - 1]]),
        Stop::Token(t) => Some(t),
        Stop::Never => None,
    };
    let done = |out: &[Vec<i64>]| stop_token.is_some_and(|t| out.iter().all(|r| r.contains(&t)));

    let guided = is_guided(settings.guidance_scale, settings.conditions);
    let mut passes = vec![Pass::new(
        EncodedContext::encode(model, state)?,
        model,
        kv_cache,
    )];
    if guided {
        let uncond = unconditional(state, settings.conditions, settings.specials)?;
        passes.push(Pass::new(
            EncodedContext::encode(model, &uncond)?,
            model,
            kv_cache,
        ));
    }

    let mut out: Vec<Vec<i64>> = first.iter().map(|&t| vec![t]).collect();
    let length = spec.max_tokens.min(n);
    let mut iteration = 0;
    while iteration < length && !done(&out) {
        let mut logits = decoder.last_logits(&mut passes[0], &out);
        if guided {
            let uncond = decoder.last_logits(&mut passes[1], &out);
            combine(&mut logits, &uncond, settings.guidance_scale);
        }
        let (tokens, _) = sample_rows(
            &logits,
            spec.vocab_size,
            settings.sampling,
            settings.temperature,
            rng,
        );
        for (row, t) in out.iter_mut().zip(&tokens) {
            row.push(*t);
        }
        hook.on_event(&GenerationEvent::Token(TokenStep {
            step: settings.step,
            modality: target,
            iteration,
            vocab: spec.vocab_size,
            logits: &logits,
            sequences: &out,
        }));
        iteration += 1;
    }

    let s1 = settings.specials.sentinel(1)?;
    let merged = merged_sequence(&current, batch, &out, settings.specials, s1);
    state.replace(target, merged);
    Ok(())
}

/// One decoder stream: with a key/value cache, or re-running the prefix.
enum Pass {
    Cached(Box<DecoderCache>),
    Full(Box<EncodedContext>),
}

impl Pass {
    fn new(context: EncodedContext, model: &FourM, kv_cache: bool) -> Self {
        if kv_cache {
            Pass::Cached(Box::new(DecoderCache::new(model, &context)))
        } else {
            Pass::Full(Box::new(context))
        }
    }
}

/// Embeds decoded tokens into the target's slots and reads the logits of the newest one.
struct SlotDecoder<'a> {
    model: &'a FourM,
    head: &'a DecoderEmbedding,
    /// `[b, slots, d]` position + modality embeddings.
    emb: Tensor<3>,
}

impl SlotDecoder<'_> {
    /// `token_emb(ids) + emb[:, start..start + len]`, ids `[b · len]` row-major.
    fn embed(&self, ids: Vec<i64>, start: usize, len: usize) -> Tensor<3> {
        let [b, _, d] = self.emb.dims();
        let device = self.emb.device();
        let x = self
            .head
            .token_emb
            .weight
            .val()
            .select(0, int_tensor(ids, &device))
            .reshape([b, len, d]);
        x + self.emb.clone().narrow(1, start, len)
    }

    /// `[b, vocab]` logits at the last decoded position of `out`.
    fn last_logits(&self, pass: &mut Pass, out: &[Vec<i64>]) -> Vec<f32> {
        let [b, _, d] = self.emb.dims();
        let len = out[0].len();
        let y = match pass {
            Pass::Cached(cache) => {
                let ids = out.iter().map(|r| r[len - 1]).collect();
                cache.forward(self.model, self.embed(ids, len - 1, 1))
            }
            Pass::Full(context) => {
                let ids = out.iter().flatten().copied().collect();
                let bias = full_causal_bias(len, &self.emb.device());
                context
                    .decode(self.model, self.embed(ids, 0, len), Some(bias))
                    .narrow(1, len - 1, 1)
            }
        };
        host(self.head.logits(y.reshape([b, d])))
    }
}
