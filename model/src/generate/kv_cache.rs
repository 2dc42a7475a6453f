//! A key/value cache for autoregressive decoding (fourm's addition; ml-4m re-runs the decoder
//! over the whole prefix for every token).
//!
//! With a causal self-attention mask, the decoder output at position `t` depends only on the
//! inputs up to `t`, so each block's self-attention keys and values of earlier positions can be
//! kept and only the new positions computed. The cross-attention keys and values depend only on
//! the encoder context and are computed once. Each new token then costs one row through every
//! block instead of the whole prefix.

use burn::tensor::{Device, Tensor, TensorData};

use crate::fourm::FourM;
use crate::generate::context::EncodedContext;
use crate::layers::{MASKED, Norm, attend, split_heads};

/// Cached keys and values of one decoder block, `[b, h, len, dh]`.
#[derive(Debug, Clone)]
struct LayerCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
    cross: Option<(Tensor<4>, Tensor<4>)>,
}

/// Decoder state for incremental causal decoding against one encoder context.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    layers: Vec<LayerCache>,
    cross_bias: Option<Tensor<4>>,
    heads: usize,
    len: usize,
}

impl DecoderCache {
    /// An empty cache; computes every block's cross-attention keys and values of `context`.
    pub fn new(model: &FourM, context: &EncodedContext) -> Self {
        let heads = model.config().num_heads;
        let layers = model
            .decoder
            .iter()
            .map(|block| {
                let cross = context.context.as_ref().map(|c| {
                    let c = block.context_norm.forward(c.clone());
                    let mut kv = block.cross_attn.kv.forward(c).chunk(2, 2);
                    let v = split_heads(kv.pop().expect("v"), heads);
                    let k = split_heads(kv.pop().expect("k"), heads);
                    (apply(block.cross_attn.k_norm.as_ref(), k), v)
                });
                LayerCache {
                    keys: None,
                    values: None,
                    cross,
                }
            })
            .collect();
        Self {
            layers,
            cross_bias: context.cross_bias.clone(),
            heads,
            len: 0,
        }
    }

    /// Positions decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been decoded yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds the decoder inputs of the next `t` positions (`[b, t, d]`, token plus position
    /// embeddings) and returns their outputs after `decoder_norm`, `[b, t, d]`: the same rows a
    /// full causal pass over the whole prefix gives at those positions.
    pub fn forward(&mut self, model: &FourM, y: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = y.dims();
        let device = y.device();
        let bias = (t > 1).then(|| causal_bias(self.len, t, &device));
        let mut y = y;
        for (block, layer) in model.decoder.iter().zip(&mut self.layers) {
            let attn = &block.self_attn;
            let mut qkv = attn.qkv.forward(block.norm1.forward(y.clone())).chunk(3, 2);
            let v = split_heads(qkv.pop().expect("v"), self.heads);
            let k = apply(
                attn.k_norm.as_ref(),
                split_heads(qkv.pop().expect("k"), self.heads),
            );
            let q = split_heads(qkv.pop().expect("q"), self.heads);
            let keys = append(layer.keys.take(), k);
            let values = append(layer.values.take(), v);
            let out = attend(
                q,
                keys.clone(),
                values.clone(),
                bias.clone(),
                attn.q_norm.as_ref(),
                None,
            );
            layer.keys = Some(keys);
            layer.values = Some(values);
            y = y.clone() + attn.proj.forward(out.swap_dims(1, 2).reshape([b, t, d]));

            if let Some((ck, cv)) = &layer.cross {
                let cross = &block.cross_attn;
                let q = split_heads(
                    cross.q.forward(block.query_norm.forward(y.clone())),
                    self.heads,
                );
                let out = attend(
                    q,
                    ck.clone(),
                    cv.clone(),
                    self.cross_bias.clone(),
                    cross.q_norm.as_ref(),
                    None,
                );
                y = y.clone() + cross.proj.forward(out.swap_dims(1, 2).reshape([b, t, d]));
            }
            y = y.clone() + block.mlp.forward(block.norm2.forward(y));
        }
        self.len += t;
        model.decoder_norm.forward(y)
    }
}

/// `[1, 1, t, past + t]`: new position `i` may attend to keys `0..=past + i`.
fn causal_bias(past: usize, t: usize, device: &Device) -> Tensor<4> {
    let total = past + t;
    let values: Vec<f32> = (0..t)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { MASKED } else { 0.0 }))
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, t, total]), device)
}

/// `[1, 1, n, n]` causal self-attention bias (ml-4m's `triu(1)` mask).
pub(crate) fn full_causal_bias(n: usize, device: &Device) -> Tensor<4> {
    causal_bias(0, n, device)
}

fn append(cache: Option<Tensor<4>>, new: Tensor<4>) -> Tensor<4> {
    match cache {
        Some(old) => Tensor::cat(vec![old, new], 2),
        None => new,
    }
}

fn apply(norm: Option<&Norm>, x: Tensor<4>) -> Tensor<4> {
    match norm {
        Some(n) => n.forward(x),
        None => x,
    }
}
