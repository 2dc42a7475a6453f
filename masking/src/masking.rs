//! ml-4m's `UnifiedMasking` (4m-spec.md §2): per sample, pick a mixture component, draw input and
//! target token budgets over the modalities from its Dirichlets, then mask each modality —
//! image-like grids by a random permutation (inputs and targets disjoint), sequences by span
//! masking with sentinels.
//!
//! All randomness of a sample comes from `rng_for(&[seed, MASKING_STREAM])`, where `seed` is the
//! sample's `SampleRef::seed`: a sample is masked the same way wherever and whenever it is read.
//! (ml-4m's torch / numpy / python RNG streams are not reproduced.)

use std::collections::BTreeMap;

use crate::alphas::{AlphasConfig, KeepScheme};
use crate::budget::{Dirichlet, split_budget};
use crate::error::MaskError;
use crate::masked::{Budget, MaskedModality, MaskedSample, MaskedTensor};
use crate::masking_config::{MaskKind, MaskingConfig, ModalityMasking, Role, TokenRange};
use crate::span::{SequenceTokens, mask_sequence};
use fourm_plan::rng_for;
use rand::{Rng, RngCore};

/// Second element of the masking RNG path (`"mask"`), keeping it apart from other per-sample
/// streams (crops, augmentation) derived from the same seed.
pub const MASKING_STREAM: u64 = 0x6d61_736b;

/// The data of one modality of a sample, before masking.
#[derive(Debug, Clone, PartialEq)]
pub enum ModalityInput {
    /// An image-like modality's flattened token grid (`max_tokens` ids).
    ImageTokens(Vec<i64>),
    /// Raw pixels, passed through (their patch grid has `max_tokens` positions).
    Pixels(Vec<f32>),
    /// A tokenized text without `[EOS]` (masking appends it, then truncates to `max_tokens`).
    Sequence(Vec<u32>),
    /// Tokenized chunks (ml-4m's list-valued sequences): masked chunk by chunk; `[EOS]` is a
    /// chunk of its own, and chunks past `max_tokens` tokens are dropped.
    Chunks(Vec<Vec<u32>>),
}

/// One modality, resolved against the alphas.
#[derive(Debug, Clone)]
struct Resolved {
    name: String,
    spec: ModalityMasking,
    keep: Vec<KeepScheme>,
}

/// The masker: a masking config, its alphas, and the sequence special tokens.
#[derive(Debug, Clone)]
pub struct Masker {
    config: MaskingConfig,
    modalities: Vec<Resolved>,
    inputs: Vec<Dirichlet>,
    targets: Vec<Dirichlet>,
    /// Cumulative component weights (`None`: uniform).
    weights: Option<Vec<f64>>,
    tokens: SequenceTokens,
}

impl Masker {
    /// A masker for `config`. Every modality of the config must have alphas (extra alphas
    /// entries are ignored, as ml-4m does), and the tokenizer enough sentinels for the longest
    /// sequence.
    pub fn new(
        config: MaskingConfig,
        alphas: &AlphasConfig,
        tokens: SequenceTokens,
    ) -> Result<Self, MaskError> {
        config.validate()?;
        alphas.validate("<masker>")?;
        let n = alphas.components();
        let mut modalities = Vec::new();
        let (mut input_alphas, mut target_alphas) = (vec![Vec::new(); n], vec![Vec::new(); n]);
        for (name, spec) in &config.modalities {
            let a = alphas
                .modalities
                .get(name)
                .ok_or_else(|| MaskError::Config {
                    modality: name.clone(),
                    reason: "no alphas for it in the alphas config".into(),
                })?;
            if spec.kind == MaskKind::Sequence {
                let needed = SequenceTokens::needed_for(spec.max_tokens);
                if tokens.sentinels.len() < needed {
                    return Err(MaskError::Config {
                        modality: name.clone(),
                        reason: format!(
                            "max_tokens {} needs {needed} sentinels [S_0]..., the tokenizer has {}",
                            spec.max_tokens,
                            tokens.sentinels.len()
                        ),
                    });
                }
            }
            for c in 0..n {
                let input = if spec.role == Role::Target {
                    0.0
                } else {
                    a.input_alphas[c]
                };
                let target = if spec.role == Role::Input {
                    0.0
                } else {
                    a.target_alphas[c]
                };
                input_alphas[c].push(input);
                target_alphas[c].push(target);
            }
            modalities.push(Resolved {
                name: name.clone(),
                spec: spec.clone(),
                keep: (0..n).map(|c| a.keep(c)).collect(),
            });
        }
        let weights = alphas.sampling_weights.as_ref().map(|w| {
            w.iter()
                .scan(0.0, |acc, x| {
                    *acc += x;
                    Some(*acc)
                })
                .collect()
        });
        Ok(Self {
            config,
            modalities,
            inputs: input_alphas.iter().map(|a| Dirichlet::new(a)).collect(),
            targets: target_alphas.iter().map(|a| Dirichlet::new(a)).collect(),
            weights,
            tokens,
        })
    }

    /// The masking config.
    pub fn config(&self) -> &MaskingConfig {
        &self.config
    }

    /// Tensor length of a modality's masked rows (grid size, or `2·(max_tokens+1)`).
    pub fn tensor_len(&self, modality: &str) -> Option<usize> {
        self.config.modalities.get(modality).map(|m| match m.kind {
            MaskKind::Image => m.max_tokens,
            MaskKind::Sequence => 2 * (m.max_tokens + 1),
        })
    }

    /// Masks one sample; `seed` is its `SampleRef::seed`.
    pub fn mask(
        &self,
        sample: &BTreeMap<String, ModalityInput>,
        seed: u64,
    ) -> Result<MaskedSample, MaskError> {
        let mut rng = rng_for(&[seed, MASKING_STREAM]);
        let (component, budgets) = self.draw_budgets(&mut rng);
        self.mask_drawn(sample, component, budgets, &mut rng)
    }

    /// Masks one sample with given budgets (config order, as [`MaskedSample::budgets`] lists
    /// them) and the keep schemes of mixture `component`; the rest of the randomness is seeded
    /// by `seed`. For replaying a recorded masking, e.g. ml-4m's fixture budgets.
    pub fn mask_with_budgets(
        &self,
        sample: &BTreeMap<String, ModalityInput>,
        component: usize,
        budgets: &[Budget],
        seed: u64,
    ) -> Result<MaskedSample, MaskError> {
        if budgets.len() != self.modalities.len() || component >= self.inputs.len() {
            return Err(MaskError::Input {
                modality: "*".into(),
                reason: format!(
                    "{} budgets for {} modalities, component {component} of {}",
                    budgets.len(),
                    self.modalities.len(),
                    self.inputs.len()
                ),
            });
        }
        let mut rng = rng_for(&[seed, MASKING_STREAM]);
        self.mask_drawn(sample, component, budgets.to_vec(), &mut rng)
    }

    fn mask_drawn<R: RngCore>(
        &self,
        sample: &BTreeMap<String, ModalityInput>,
        component: usize,
        budgets: Vec<Budget>,
        rng: &mut R,
    ) -> Result<MaskedSample, MaskError> {
        let mut modalities = BTreeMap::new();
        for (m, budget) in self.modalities.iter().zip(&budgets) {
            let data = sample.get(&m.name).ok_or_else(|| MaskError::Input {
                modality: m.name.clone(),
                reason: "missing from the sample".into(),
            })?;
            let masked = self
                .mask_modality(m, data, *budget, m.keep[component], rng)
                .map_err(|reason| MaskError::Input {
                    modality: m.name.clone(),
                    reason,
                })?;
            modalities.insert(m.name.clone(), masked);
        }
        Ok(MaskedSample {
            component,
            modalities,
            budgets: self
                .modalities
                .iter()
                .map(|m| m.name.clone())
                .zip(budgets)
                .collect(),
        })
    }

    /// Draws the mixture component and every modality's budget (config order).
    fn draw_budgets<R: RngCore>(&self, rng: &mut R) -> (usize, Vec<Budget>) {
        let component = match &self.weights {
            Some(cumulative) => {
                let total = cumulative.last().copied().unwrap_or(0.0);
                let x = rng.random::<f64>() * total;
                cumulative
                    .iter()
                    .position(|&c| x < c)
                    .unwrap_or(cumulative.len() - 1)
            }
            None => rng.random_range(0..self.inputs.len()),
        };
        let range = |r: TokenRange, rng: &mut R| rng.random_range(r.min..=r.max);
        let num_inputs = range(self.config.input_tokens, rng);
        let num_targets = self.config.target_tokens.map(|r| range(r, rng));
        let caps: Vec<usize> = self.modalities.iter().map(|m| m.spec.max_tokens).collect();
        let mins: Vec<usize> = self.modalities.iter().map(|m| m.spec.min_tokens).collect();
        let tries = self.config.max_tries;
        let (inputs, ok) = split_budget(
            &self.inputs[component],
            num_inputs,
            &caps,
            &mins,
            tries,
            rng,
        );
        if !ok {
            tracing::warn!(
                component,
                tries,
                "input budget below min_tokens after max tries"
            );
        }
        let targets = match num_targets {
            Some(n) => {
                let caps: Vec<usize> = self
                    .modalities
                    .iter()
                    .zip(&inputs)
                    .map(|(m, &i)| match m.spec.kind {
                        MaskKind::Image => m.spec.max_tokens - i,
                        MaskKind::Sequence => m.spec.max_tokens,
                    })
                    .zip(&mins)
                    .map(|(cap, &min)| cap.max(min))
                    .collect();
                let (t, ok) = split_budget(&self.targets[component], n, &caps, &mins, tries, rng);
                if !ok {
                    tracing::warn!(
                        component,
                        tries,
                        "target budget below min_tokens after max tries"
                    );
                }
                t.into_iter().map(Some).collect()
            }
            None => vec![None; inputs.len()],
        };
        let budgets = inputs
            .into_iter()
            .zip(targets)
            .zip(&self.modalities)
            .map(|((input, target), m)| Budget {
                input,
                // Without a target range, an input-only modality still has no targets.
                target: if m.spec.role == Role::Input {
                    Some(0)
                } else {
                    target
                },
            })
            .collect();
        (component, budgets)
    }

    fn mask_modality<R: RngCore>(
        &self,
        m: &Resolved,
        data: &ModalityInput,
        budget: Budget,
        keep: KeepScheme,
        rng: &mut R,
    ) -> Result<MaskedModality, String> {
        let max = m.spec.max_tokens;
        match (m.spec.kind, data) {
            (MaskKind::Image, ModalityInput::ImageTokens(ids)) => {
                if ids.len() != max {
                    return Err(format!("{} tokens, expected the grid's {max}", ids.len()));
                }
                let tensor = MaskedTensor::Tokens(ids.clone());
                Ok(image_mask(tensor, max, budget, rng))
            }
            (MaskKind::Image, ModalityInput::Pixels(px)) => {
                if px.is_empty() || !px.len().is_multiple_of(max.max(1)) {
                    return Err(format!(
                        "{} pixel values do not fill {max} patches",
                        px.len()
                    ));
                }
                Ok(image_mask(
                    MaskedTensor::Pixels(px.clone()),
                    max,
                    budget,
                    rng,
                ))
            }
            (MaskKind::Sequence, ModalityInput::Sequence(ids)) => {
                let mut seq: Vec<[u32; 1]> = ids.iter().map(|&t| [t]).collect();
                seq.push([self.tokens.eos]);
                seq.truncate(max);
                mask_sequence(
                    &seq,
                    max,
                    budget.input,
                    budget.target,
                    keep,
                    &self.tokens,
                    rng,
                )
            }
            (MaskKind::Sequence, ModalityInput::Chunks(chunks)) => {
                let mut total = 0;
                let kept: Vec<&[u32]> = chunks
                    .iter()
                    .map(Vec::as_slice)
                    .chain(std::iter::once(std::slice::from_ref(&self.tokens.eos)))
                    .filter(|c| {
                        total += c.len();
                        total <= max
                    })
                    .collect();
                if kept.len() > max {
                    return Err(format!("{} chunks exceed max_tokens {max}", kept.len()));
                }
                mask_sequence(
                    &kept,
                    max,
                    budget.input,
                    budget.target,
                    keep,
                    &self.tokens,
                    rng,
                )
            }
            (kind, _) => Err(format!("data does not fit a modality of kind {kind:?}")),
        }
    }
}

/// Image-like masking: a random permutation of the `len` positions; its first `input` entries
/// are inputs, the next `target` entries targets (without a target budget: every non-input).
/// The compressed attention mask holds the number of targets at the first target position.
fn image_mask<R: RngCore>(
    tensor: MaskedTensor,
    len: usize,
    budget: Budget,
    rng: &mut R,
) -> MaskedModality {
    let mut order: Vec<usize> = (0..len).collect();
    fourm_plan::shuffle(&mut order, rng);
    let inputs = budget.input.min(len);
    let targets = budget.target.map_or(len - inputs, |t| t.min(len - inputs));
    let mut input_mask = vec![true; len];
    let mut target_mask = vec![true; len];
    for &p in &order[..inputs] {
        input_mask[p] = false;
    }
    for &p in &order[inputs..inputs + targets] {
        target_mask[p] = false;
    }
    let mut attention = vec![0; len];
    if let Some(first) = target_mask.iter().position(|m| !m) {
        attention[first] = targets as i32;
    }
    MaskedModality {
        tensor,
        input_mask,
        target_mask,
        decoder_attention_mask: attention,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> SequenceTokens {
        SequenceTokens {
            pad: 0,
            eos: 3,
            sentinels: (4..24).collect(),
        }
    }

    fn config() -> MaskingConfig {
        toml::from_str(
            r#"
input_tokens = [16, 24]
target_tokens = [16, 24]
[modalities.caption]
kind = "seq"
max_tokens = 16
[modalities."tok_depth@64"]
kind = "img"
max_tokens = 16
[modalities."tok_rgb@128"]
kind = "image"
max_tokens = 64
"#,
        )
        .unwrap()
    }

    fn sample() -> BTreeMap<String, ModalityInput> {
        BTreeMap::from([
            (
                "caption".into(),
                ModalityInput::Sequence((30..44).collect()),
            ),
            (
                "tok_depth@64".into(),
                ModalityInput::ImageTokens((0..16).collect()),
            ),
            (
                "tok_rgb@128".into(),
                ModalityInput::ImageTokens((0..64).collect()),
            ),
        ])
    }

    #[test]
    fn same_seed_same_masks_other_seed_other_masks() {
        let alphas = AlphasConfig::single(
            &["caption", "tok_depth@64", "tok_rgb@128"],
            1.0,
            &["caption", "tok_depth@64", "tok_rgb@128"],
            1.0,
        )
        .unwrap();
        let masker = Masker::new(config(), &alphas, tokens()).unwrap();
        let a = masker.mask(&sample(), 11).unwrap();
        assert_eq!(a, masker.mask(&sample(), 11).unwrap());
        let differs = (12..20).any(|s| masker.mask(&sample(), s).unwrap() != a);
        assert!(differs);
    }

    #[test]
    fn input_only_modalities_are_never_targets() {
        let mut cfg = config();
        cfg.modalities.get_mut("tok_rgb@128").unwrap().role = Role::Input;
        cfg.target_tokens = None;
        let names = ["caption", "tok_depth@64", "tok_rgb@128"];
        let alphas = AlphasConfig::single(&names, 1.0, &names, 1.0).unwrap();
        let masker = Masker::new(cfg, &alphas, tokens()).unwrap();
        for seed in 0..50 {
            let s = masker.mask(&sample(), seed).unwrap();
            assert_eq!(s.modalities["tok_rgb@128"].num_targets(), 0);
            let depth = &s.modalities["tok_depth@64"];
            assert_eq!(depth.num_inputs() + depth.num_targets(), 16, "complement");
        }
    }

    #[test]
    fn bad_samples_and_configs_are_errors() {
        let names = ["caption", "tok_depth@64", "tok_rgb@128"];
        let alphas = AlphasConfig::single(&names, 1.0, &names, 1.0).unwrap();
        let masker = Masker::new(config(), &alphas, tokens()).unwrap();
        let mut s = sample();
        s.insert(
            "tok_rgb@128".into(),
            ModalityInput::ImageTokens(vec![1; 10]),
        );
        let err = masker.mask(&s, 0).unwrap_err();
        assert!(err.to_string().contains("tok_rgb@128"), "{err}");
        s.remove("tok_rgb@128");
        assert!(
            masker
                .mask(&s, 0)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        let few = SequenceTokens {
            sentinels: (4..8).collect(),
            ..tokens()
        };
        let err = Masker::new(config(), &alphas, few).unwrap_err();
        assert!(err.to_string().contains("sentinels"), "{err}");
        let partial = AlphasConfig::single(&["caption"], 1.0, &["caption"], 1.0).unwrap();
        let err = Masker::new(config(), &partial, tokens()).unwrap_err();
        assert!(err.to_string().contains("tok_depth@64"), "{err}");
        let bad: Result<MaskingConfig, _> = toml::from_str(
            "input_tokens = 4\n[modalities.a]\nkind = \"img\"\nmax_tokens = 4\nsize = 3",
        );
        assert!(bad.is_err());
    }
}
