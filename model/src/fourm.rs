//! The 4M encoder-decoder (`FourM` in ml-4m's `fm.py`): module layout, initialisation and the
//! training forward pass.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::batch::Batch;
use crate::config::FourMConfig;
use crate::embed::{DecoderEmbedding, EncoderEmbedding, int_tensor};
use crate::error::ModelError;
use crate::init::InitRng;
use crate::layers::{Block, DecoderBlock, MASKED, Norm};
use crate::loss::{
    LossType, LossWeights, ModalityLoss, TargetCount, counts_of, modality_loss, weighted_total,
};
use crate::modality::Modalities;
use crate::precision::{self, Precision, linear};
use crate::selection::{DecoderMasking, SelectionPlan, plan_decoder, plan_encoder};

/// A 4M model. Field names are ml-4m's state-dict prefixes.
#[derive(Module, Debug)]
pub struct FourM {
    /// One per modality, in sorted-name order.
    pub encoder_embeddings: Vec<EncoderEmbedding>,
    /// Encoder blocks.
    pub encoder: Vec<Block>,
    /// Norm after the last encoder block.
    pub encoder_norm: Norm,
    /// One per target modality, in sorted-name order.
    pub decoder_embeddings: Vec<DecoderEmbedding>,
    /// `Linear(d, d)` with bias (also in `nobias` models) applied to the encoder output.
    pub decoder_proj_context: Linear,
    /// Decoder blocks.
    pub decoder: Vec<DecoderBlock>,
    /// Norm after the last decoder block.
    pub decoder_norm: Norm,
    /// Learned input of every image-like decoder slot, `[1, 1, d]`.
    pub mask_token: Param<Tensor<3>>,
    #[module(skip)]
    config: FourMConfig,
    #[module(skip)]
    modalities: Modalities,
}

/// How many tokens the encoder and decoder take, and which loss to use.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// Encoder slots `N` (ml-4m `num_encoder_tokens`).
    pub num_encoder_tokens: usize,
    /// Decoder slots `M` (ml-4m `num_decoder_tokens`).
    pub num_decoder_tokens: usize,
    /// Order in which decoder modalities are concatenated. ml-4m shuffles it every step; the
    /// loss does not depend on it. `None`: sorted by name.
    pub decoder_order: Option<Vec<String>>,
    /// Loss reduction.
    pub loss: LossType,
    /// Normalise the loss by the target counts of a larger batch this one is part of (see
    /// [`LossWeights`]); `None`: by this batch's own counts, as ml-4m does.
    pub global_counts: Option<Vec<TargetCount>>,
    /// Arithmetic of the matrix products ([`precision`](crate::precision)).
    pub precision: Precision,
}

impl StepOptions {
    /// `N` encoder and `M` decoder slots, sorted decoder order, `mod` loss, `f32`.
    pub fn new(num_encoder_tokens: usize, num_decoder_tokens: usize) -> Self {
        Self {
            num_encoder_tokens,
            num_decoder_tokens,
            decoder_order: None,
            loss: LossType::Mod,
            global_counts: None,
            precision: Precision::F32,
        }
    }
}

/// Everything one training forward pass produces.
#[derive(Debug)]
pub struct StepOutput {
    /// Encoder token selection.
    pub encoder_plan: SelectionPlan,
    /// Decoder token selection and attention mask.
    pub decoder_plan: SelectionPlan,
    /// Token content of the encoder slots (zero at padding), `[b, n, d]`.
    pub encoder_tokens: Tensor<3>,
    /// Position + modality embeddings of the encoder slots (zero at padding), `[b, n, d]`.
    pub encoder_emb: Tensor<3>,
    /// After the encoder blocks and `encoder_norm`, `[b, n, d]`.
    pub encoder_output: Tensor<3>,
    /// `decoder_proj_context(encoder_output) + encoder emb`, `[b, n, d]`.
    pub context: Tensor<3>,
    /// Decoder slot inputs (mask token or teacher-forced token, zero at padding), `[b, m, d]`.
    pub decoder_tokens: Tensor<3>,
    /// Position + modality embeddings of the decoder slots (zero at padding), `[b, m, d]`.
    pub decoder_emb: Tensor<3>,
    /// After the decoder blocks and `decoder_norm`, `[b, m, d]`.
    pub decoder_output: Tensor<3>,
    /// Per decoder modality, in decoder order: logits of its target slots and its loss.
    pub modality_losses: Vec<ModalityLoss>,
    /// The total loss, `[1]`.
    pub loss: Tensor<1>,
}

impl StepOutput {
    /// The total loss of this batch under another reduction of the same modality losses.
    pub fn total(&self, kind: LossType) -> Tensor<1> {
        let weights = LossWeights::new(kind, &self.target_counts());
        weighted_total(&self.modality_losses, &weights, &self.loss.device())
    }

    /// Target tokens per decoder modality in this batch.
    pub fn target_counts(&self) -> Vec<TargetCount> {
        counts_of(&self.modality_losses)
    }
}

impl FourMConfig {
    /// Builds a model for `modalities`, initialised as ml-4m from a seeded stream.
    pub fn init(
        &self,
        modalities: &Modalities,
        seed: u64,
        device: &Device,
    ) -> Result<FourM, ModelError> {
        self.validate()?;
        let rng = &mut InitRng::new(seed, device);
        let d = self.dim;
        let nb = self.norm_bias_trainable();
        let encoder_embeddings = modalities
            .iter()
            .map(|s| EncoderEmbedding::new(s, d, rng))
            .collect();
        let decoder_embeddings = modalities
            .targets()
            .map(|s| DecoderEmbedding::new(s, d, rng))
            .collect();
        let encoder = (0..self.encoder_depth)
            .map(|_| Block::new(self, rng))
            .collect();
        let encoder_norm = Norm::new(d, nb, rng);
        let decoder_proj_context = rng.xavier_linear(d, d, true);
        let decoder = (0..self.decoder_depth)
            .map(|_| DecoderBlock::new(self, rng))
            .collect();
        let decoder_norm = Norm::new(d, nb, rng);
        let mask_token = rng.normal([1, 1, d]);
        Ok(FourM {
            encoder_embeddings,
            encoder,
            encoder_norm,
            decoder_embeddings,
            decoder_proj_context,
            decoder,
            decoder_norm,
            mask_token,
            config: self.clone(),
            modalities: modalities.clone(),
        })
    }
}

impl FourM {
    /// The architecture.
    pub fn config(&self) -> &FourMConfig {
        &self.config
    }

    /// The modalities.
    pub fn modalities(&self) -> &Modalities {
        &self.modalities
    }

    /// The device holding the parameters.
    pub fn device(&self) -> Device {
        self.mask_token.val().device()
    }

    /// One training forward pass: select tokens, encode, decode, compute the losses (the matrix
    /// products in `options.precision`).
    pub fn forward(&self, batch: &Batch, options: &StepOptions) -> Result<StepOutput, ModelError> {
        precision::autocast(options.precision, || self.forward_with(batch, options))
    }

    fn forward_with(&self, batch: &Batch, options: &StepOptions) -> Result<StepOutput, ModelError> {
        batch.validate(&self.modalities)?;
        let device = self.device();
        let order = self.decoder_order(batch, options.decoder_order.as_deref())?;
        let encoder_plan = plan_encoder(batch, &self.modalities, options.num_encoder_tokens)?;
        let masking = DecoderMasking {
            sep_mask: self.config.decoder_sep_mask,
            causal: self.config.decoder_causal_mask,
        };
        let decoder_plan = plan_decoder(
            batch,
            &self.modalities,
            &order,
            options.num_decoder_tokens,
            masking,
        )?;

        let (encoder_tokens, encoder_emb) = self.encoder_inputs(batch, &encoder_plan, &device);
        let cross_bias = key_padding_bias(&encoder_plan, &device);
        let encoder_output = self.encode(
            encoder_tokens.clone() + encoder_emb.clone(),
            cross_bias.clone(),
        );
        let context =
            linear(&self.decoder_proj_context, encoder_output.clone()) + encoder_emb.clone();

        let (decoder_tokens, decoder_emb) = self.decoder_inputs(&decoder_plan, &device);
        let self_bias = attention_bias(&decoder_plan, &device);
        let y = decoder_tokens.clone() + decoder_emb.clone();
        let decoder_output = self.decode(y, context.clone(), Some(self_bias), cross_bias);

        let [b, m, d] = decoder_output.dims();
        let flat = decoder_output.clone().reshape([b * m, d]);
        let modality_losses: Vec<ModalityLoss> = decoder_plan
            .per_modality
            .iter()
            .map(|slots| {
                let spec = self.modalities.iter().nth(slots.modality).expect("planned");
                let head = &self.decoder_embeddings[self.decoder_index(slots.modality)];
                modality_loss(&spec.name, head, flat.clone(), slots, &device)
            })
            .collect();
        let counts = options
            .global_counts
            .clone()
            .unwrap_or_else(|| counts_of(&modality_losses));
        let loss = weighted_total(
            &modality_losses,
            &LossWeights::new(options.loss, &counts),
            &device,
        );
        Ok(StepOutput {
            encoder_plan,
            decoder_plan,
            encoder_tokens,
            encoder_emb,
            encoder_output,
            context,
            decoder_tokens,
            decoder_emb,
            decoder_output,
            modality_losses,
            loss,
        })
    }

    /// Runs the encoder blocks and `encoder_norm` on `x` (`[b, n, d]`), with padding keys masked
    /// by `key_bias` (`[b, 1, 1, n]`).
    pub fn encode(&self, x: Tensor<3>, key_bias: Option<Tensor<4>>) -> Tensor<3> {
        let x = self
            .encoder
            .iter()
            .fold(x, |x, block| block.forward(x, key_bias.clone()));
        self.encoder_norm.forward(x)
    }

    /// Runs the decoder blocks and `decoder_norm` on `y` (`[b, m, d]`) against `context`.
    pub fn decode(
        &self,
        y: Tensor<3>,
        context: Tensor<3>,
        self_bias: Option<Tensor<4>>,
        cross_bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let y = self.decoder.iter().fold(y, |y, block| {
            block.forward(y, context.clone(), self_bias.clone(), cross_bias.clone())
        });
        self.decoder_norm.forward(y)
    }

    /// Index into `decoder_embeddings` of the registry modality `modality`.
    pub fn decoder_index(&self, modality: usize) -> usize {
        self.modalities
            .iter()
            .take(modality)
            .filter(|s| !s.input_only)
            .count()
    }

    /// Decoder modality order as registry indices: the given names, or the batch's target
    /// modalities sorted by name.
    pub(crate) fn decoder_order(
        &self,
        batch: &Batch,
        order: Option<&[String]>,
    ) -> Result<Vec<usize>, ModelError> {
        let present: Vec<usize> = batch
            .modalities
            .keys()
            .filter_map(|name| self.modalities.index_of(name))
            .filter(|&i| !self.modalities.iter().nth(i).expect("indexed").input_only)
            .collect();
        let Some(order) = order else {
            return Ok(present);
        };
        let mut idx = Vec::with_capacity(order.len());
        for name in order {
            let i = self
                .modalities
                .index_of(name)
                .filter(|i| present.contains(i))
                .ok_or_else(|| {
                    ModelError::batch(
                        name,
                        "decoder order names a modality the batch cannot decode",
                    )
                })?;
            if idx.contains(&i) {
                return Err(ModelError::batch(name, "listed twice in the decoder order"));
            }
            idx.push(i);
        }
        if idx.len() != present.len() {
            return Err(ModelError::batch(
                "*",
                "decoder order must list every target modality of the batch",
            ));
        }
        Ok(idx)
    }

    /// `x` and `emb` of the encoder slots, `[b, n, d]` each, zero at padding.
    fn encoder_inputs(
        &self,
        batch: &Batch,
        plan: &SelectionPlan,
        device: &Device,
    ) -> (Tensor<3>, Tensor<3>) {
        let mut xs = Vec::new();
        let mut embs = Vec::new();
        for slots in plan.per_modality.iter().filter(|s| !s.positions.is_empty()) {
            let spec = self.modalities.iter().nth(slots.modality).expect("planned");
            let data = &batch.modalities[&spec.name];
            let (x, emb) = self.encoder_embeddings[slots.modality].rows(spec, data, slots, device);
            xs.push(x);
            embs.push(emb);
        }
        (
            self.scatter_slots(xs, plan, device),
            self.scatter_slots(embs, plan, device),
        )
    }

    /// Decoder inputs (mask token or token) and `emb` of the decoder slots, `[b, m, d]` each,
    /// zero at padding.
    fn decoder_inputs(&self, plan: &SelectionPlan, device: &Device) -> (Tensor<3>, Tensor<3>) {
        let d = self.config.dim;
        let mut xs = Vec::new();
        let mut embs = Vec::new();
        for slots in plan.per_modality.iter().filter(|s| !s.positions.is_empty()) {
            let spec = self.modalities.iter().nth(slots.modality).expect("planned");
            let head = &self.decoder_embeddings[self.decoder_index(slots.modality)];
            let x = if spec.is_sequence() {
                head.token_rows(slots, device)
            } else {
                self.mask_token
                    .val()
                    .reshape([1, d])
                    .expand([slots.positions.len(), d])
            };
            xs.push(x);
            embs.push(head.position_rows(
                &self.encoder_embeddings[slots.modality].mod_emb,
                slots,
                device,
            ));
        }
        (
            self.scatter_slots(xs, plan, device),
            self.scatter_slots(embs, plan, device),
        )
    }

    /// Places per-modality rows (in the plan's modality order) into `[b, slots, d]`, zeros at
    /// padding slots.
    fn scatter_slots(
        &self,
        mut rows: Vec<Tensor<2>>,
        plan: &SelectionPlan,
        device: &Device,
    ) -> Tensor<3> {
        let d = self.config.dim;
        rows.push(Tensor::zeros([1, d], device));
        let table = Tensor::cat(rows, 0);
        table
            .select(0, int_tensor(plan.slot_rows.clone(), device))
            .reshape([plan.batch, plan.slots, d])
    }
}

/// `[b, 1, 1, n]` additive bias masking the encoder's padding slots as keys (`None` when no
/// slot is padding).
pub(crate) fn key_padding_bias(plan: &SelectionPlan, device: &Device) -> Option<Tensor<4>> {
    if !plan.pad.contains(&true) {
        return None;
    }
    let values: Vec<f32> = plan
        .pad
        .iter()
        .map(|&p| if p { MASKED } else { 0.0 })
        .collect();
    Some(Tensor::from_data(
        TensorData::new(values, [plan.batch, 1, 1, plan.slots]),
        device,
    ))
}

/// `[b, 1, m, m]` additive bias of the decoder self-attention mask.
pub(crate) fn attention_bias(plan: &SelectionPlan, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = plan
        .attention_masked
        .iter()
        .map(|&p| if p { MASKED } else { 0.0 })
        .collect();
    Tensor::from_data(
        TensorData::new(values, [plan.batch, 1, plan.slots, plan.slots]),
        device,
    )
}
