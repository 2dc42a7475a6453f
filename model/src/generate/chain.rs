//! A chained generation plan (ml-4m `build_chained_generation_schedules`): targets decoded one
//! after the other, each with its own method, steps, sampling and guidance; every finished
//! target is an input of the following ones. Serde-friendly, so a command line or a config file
//! can describe it.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::generate::guidance::Guidance;
use crate::generate::sampling::Sampling;
use crate::generate::schedule::{TemperatureSchedule, TokenSchedule};
use crate::modality::{Modalities, ModalityKind};

/// Where autoregressive decoding stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// At the last token of the empty target, the closing sentinel `[S_2]`, once every sample
    /// has produced it (ml-4m's default). The text before it ends with `[EOS]`.
    #[default]
    FinalSentinel,
    /// Once every sample has produced this token id.
    Token(i64),
    /// Only after the length limit.
    Never,
}

/// How a target is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Method {
    /// MaskGIT (image-like targets): each step predicts every remaining position and commits the
    /// most confident ones.
    #[serde(rename = "maskgit")]
    MaskGit {
        /// Decoding steps.
        steps: usize,
        /// Tokens per step.
        #[serde(default = "cosine")]
        schedule: TokenSchedule,
    },
    /// ROAR, random-order autoregression (image-like targets): each step predicts and commits
    /// a random subset of the remaining positions (linear schedule, as ml-4m).
    Roar {
        /// Decoding steps.
        steps: usize,
    },
    /// Left-to-right decoding of a sequence target, one token per decoder pass.
    Autoregressive {
        /// Stopping rule.
        #[serde(default)]
        stop: Stop,
    },
}

fn cosine() -> TokenSchedule {
    TokenSchedule::Cosine
}

/// One target of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetPlan {
    /// The modality to generate.
    pub modality: String,
    /// Decoding method.
    pub method: Method,
    /// Images: tokens to decode (default every remaining position). Sequences: positions of the
    /// empty target when the plan creates it (default the modality's `max_tokens`; ml-4m's
    /// `tokens_per_target`).
    #[serde(default)]
    pub tokens: Option<usize>,
    /// Temperature (at the first step), top-k and top-p.
    pub sampling: Sampling,
    /// Temperature of the following MaskGIT / ROAR steps (autoregressive decoding keeps the
    /// starting temperature, as ml-4m).
    #[serde(default = "constant_temperature")]
    pub temperature_schedule: TemperatureSchedule,
    /// Classifier-free guidance (its schedule applies to MaskGIT / ROAR steps; autoregressive
    /// decoding keeps the starting scale, as ml-4m).
    #[serde(default)]
    pub guidance: Guidance,
}

fn constant_temperature() -> TemperatureSchedule {
    TemperatureSchedule::Constant
}

impl TargetPlan {
    /// MaskGIT with a cosine schedule over `steps` steps, greedy, unguided.
    pub fn maskgit(modality: &str, steps: usize) -> Self {
        Self::new(
            modality,
            Method::MaskGit {
                steps,
                schedule: TokenSchedule::Cosine,
            },
        )
    }

    /// ROAR over `steps` steps, greedy, unguided.
    pub fn roar(modality: &str, steps: usize) -> Self {
        Self::new(modality, Method::Roar { steps })
    }

    /// Autoregressive decoding up to the closing sentinel, greedy, unguided.
    pub fn autoregressive(modality: &str) -> Self {
        Self::new(
            modality,
            Method::Autoregressive {
                stop: Stop::FinalSentinel,
            },
        )
    }

    fn new(modality: &str, method: Method) -> Self {
        Self {
            modality: modality.to_string(),
            method,
            tokens: None,
            sampling: Sampling::greedy(),
            temperature_schedule: TemperatureSchedule::Constant,
            guidance: Guidance::none(),
        }
    }

    /// With this sampling.
    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// With this temperature schedule.
    pub fn with_temperature_schedule(mut self, schedule: TemperatureSchedule) -> Self {
        self.temperature_schedule = schedule;
        self
    }

    /// With this guidance.
    pub fn with_guidance(mut self, guidance: Guidance) -> Self {
        self.guidance = guidance;
        self
    }

    /// With this token count (see [`TargetPlan::tokens`]).
    pub fn with_tokens(mut self, tokens: usize) -> Self {
        self.tokens = Some(tokens);
        self
    }
}

/// A chain of targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationPlan {
    /// Targets, in decoding order.
    pub targets: Vec<TargetPlan>,
    /// Modalities emptied by the unconditional pass of guidance (ml-4m `cfg_cond_domains`);
    /// default: every modality of the starting state that is not a target of the plan.
    #[serde(default)]
    pub guidance_conditions: Option<Vec<String>>,
    /// Add each finished target to the guided conditions (ml-4m `cfg_grow_conditioning`).
    #[serde(default)]
    pub grow_conditioning: bool,
    /// Seed; step `i` of the chain samples with `seed + i`. The same seed, state and plan give
    /// the same result.
    #[serde(default)]
    pub seed: u64,
    /// Use the key/value cache for autoregressive targets (same logits within float rounding).
    #[serde(default = "yes")]
    pub kv_cache: bool,
}

fn yes() -> bool {
    true
}

impl GenerationPlan {
    /// A plan of `targets`, seed 0, default guidance conditions, key/value cache on.
    pub fn new(targets: Vec<TargetPlan>) -> Self {
        Self {
            targets,
            guidance_conditions: None,
            grow_conditioning: false,
            seed: 0,
            kv_cache: true,
        }
    }

    /// With this seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks the plan against a model's modalities: targets exist, can be decoded by their
    /// method, appear once; settings are in range.
    pub fn validate(&self, modalities: &Modalities) -> Result<(), ModelError> {
        if self.targets.is_empty() {
            return Err(ModelError::generation("*", "the plan has no target"));
        }
        for (i, t) in self.targets.iter().enumerate() {
            let name = t.modality.as_str();
            let bad = |reason: String| Err(ModelError::generation(name, reason));
            let Some(spec) = modalities.get(name) else {
                return bad("not a modality of this model".into());
            };
            if spec.input_only {
                return bad("input-only modality cannot be generated".into());
            }
            if self.targets[..i].iter().any(|o| o.modality == t.modality) {
                return bad("listed twice in the plan".into());
            }
            match (t.method, spec.kind) {
                (
                    Method::MaskGit { steps, .. } | Method::Roar { steps },
                    ModalityKind::ImageTokens { .. },
                ) => {
                    if steps == 0 {
                        return bad("steps must be at least 1".into());
                    }
                }
                (Method::Autoregressive { .. }, ModalityKind::Sequence { .. }) => {
                    if t.tokens == Some(0) || t.tokens == Some(1) {
                        return bad("a sequence target needs at least 2 positions".into());
                    }
                }
                (Method::Autoregressive { .. }, _) => {
                    return bad("autoregressive decoding needs a sequence modality".into());
                }
                _ => return bad("MaskGIT and ROAR need an image-like token modality".into()),
            }
            t.sampling.validate(name)?;
            if let TemperatureSchedule::OneX { min_t, power } = t.temperature_schedule
                && !(min_t.is_finite() && min_t >= 0.0 && power.is_finite())
            {
                return bad(format!("onex schedule min_t {min_t} / power {power}"));
            }
            if !t.guidance.scale.is_finite() {
                return bad(format!("guidance scale {}", t.guidance.scale));
            }
        }
        for c in self.guidance_conditions.iter().flatten() {
            if modalities.get(c).is_none() {
                return Err(ModelError::generation(
                    c,
                    "guidance condition is not a modality of this model",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modality::ModalitySpec;

    fn registry() -> Modalities {
        Modalities::new(vec![
            ModalitySpec::image_tokens("tok_rgb", 16, [2, 2]),
            ModalitySpec::sequence("caption", 50, 8),
            ModalitySpec::image_pixels("rgb", 4, 2, 3),
        ])
        .unwrap()
    }

    #[test]
    fn plans_are_checked() {
        let r = registry();
        let ok = GenerationPlan::new(vec![
            TargetPlan::maskgit("tok_rgb", 4),
            TargetPlan::autoregressive("caption"),
        ]);
        ok.validate(&r).unwrap();
        let bad = [
            GenerationPlan::new(vec![]),
            GenerationPlan::new(vec![TargetPlan::maskgit("caption", 4)]),
            GenerationPlan::new(vec![TargetPlan::autoregressive("tok_rgb")]),
            GenerationPlan::new(vec![TargetPlan::maskgit("rgb", 4)]),
            GenerationPlan::new(vec![TargetPlan::roar("tok_rgb", 0)]),
            GenerationPlan::new(vec![TargetPlan::roar("depth", 2)]),
            GenerationPlan::new(vec![
                TargetPlan::roar("tok_rgb", 2),
                TargetPlan::maskgit("tok_rgb", 2),
            ]),
            GenerationPlan::new(vec![
                TargetPlan::roar("tok_rgb", 2).with_sampling(Sampling::with_temperature(-1.0)),
            ]),
        ];
        for plan in bad {
            assert!(plan.validate(&r).is_err(), "{plan:?}");
        }
    }

    #[test]
    fn plans_read_from_json() {
        let json = r#"{
            "targets": [
                {"modality": "tok_rgb", "method": {"kind": "maskgit", "steps": 8},
                 "sampling": {"temperature": 1.0, "top_p": 0.8},
                 "temperature_schedule": {"kind": "linear"},
                 "guidance": {"scale": 3.0}},
                {"modality": "caption", "method": {"kind": "autoregressive"},
                 "sampling": {"temperature": 0.0, "top_k": {"count": 5}}}
            ],
            "seed": 7
        }"#;
        let plan: GenerationPlan = serde_json::from_str(json).unwrap();
        plan.validate(&registry()).unwrap();
        assert_eq!(
            plan.targets[0].method,
            Method::MaskGit {
                steps: 8,
                schedule: TokenSchedule::Cosine
            }
        );
        assert!(plan.kv_cache);
        assert_eq!(
            plan.targets[1].method,
            Method::Autoregressive {
                stop: Stop::FinalSentinel
            }
        );
        assert!(serde_json::from_str::<GenerationPlan>(r#"{"targets": [], "bogus": 1}"#).is_err());
    }
}
