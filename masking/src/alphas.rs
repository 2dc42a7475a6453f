//! Dirichlet concentration parameters ("alphas") of ml-4m's masking: per modality, one input and
//! one target alpha per mixture component, an optional `keep` scheme per component for sequence
//! modalities, and optional sampling weights of the components.
//!
//! The files are ml-4m's `alphas_config` YAML as they are, in either of its two shapes:
//!
//! ```yaml
//! # one mixture, components drawn uniformly
//! rgb@224:
//!   input_alphas: [1000.0, 0.5]
//!   target_alphas: [0., 0.]
//! caption:
//!   input_alphas: [0., 0.5]
//!   target_alphas: [0.5, 0.5]
//!   keep: ['random', 'random']
//! ```
//!
//! ```yaml
//! # weighted components
//! sampling_weights: [1.0, 1.0, 0.5]
//! alphas_mixture:
//!   rgb@224: { input_alphas: [...], target_alphas: [...] }
//! ```
//!
//! The TOML equivalent has the same keys (`["rgb@224"]` tables, or `sampling_weights` plus
//! `[alphas_mixture."rgb@224"]` tables). Both parse into [`AlphasConfig`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::MaskError;

/// How much of a sequence stays visible in the input (ml-4m's `keep` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeepScheme {
    /// Keep probability drawn from `U(0, 1)`.
    #[default]
    Random,
    /// Keep probability 1: the whole sequence is an input (then lowered while over budget).
    All,
    /// Keep probability 0 or 1 with equal chance.
    Binary,
}

/// The alphas of one modality, one entry per mixture component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityAlphas {
    /// Input Dirichlet concentration per component (0 = never an input in that component).
    pub input_alphas: Vec<f64>,
    /// Target Dirichlet concentration per component (0 = never a target in that component).
    pub target_alphas: Vec<f64>,
    /// Keep scheme per component (sequence modalities; `random` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Vec<KeepScheme>>,
}

impl ModalityAlphas {
    /// The keep scheme of component `c` (`random` when the modality has none).
    pub fn keep(&self, c: usize) -> KeepScheme {
        self.keep
            .as_ref()
            .and_then(|k| k.get(c).copied())
            .unwrap_or_default()
    }
}

/// A mixture of Dirichlet distributions over modalities, for inputs and for targets.
#[derive(Debug, Clone, PartialEq)]
pub struct AlphasConfig {
    /// Relative weights of the components (`None`: uniform, as ml-4m's `random.randint`).
    pub sampling_weights: Option<Vec<f64>>,
    /// Modality name → alphas.
    pub modalities: BTreeMap<String, ModalityAlphas>,
}

/// The weighted shape of the file.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WeightedFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sampling_weights: Option<Vec<f64>>,
    alphas_mixture: BTreeMap<String, ModalityAlphas>,
}

impl AlphasConfig {
    /// A single Dirichlet (ml-4m's `input_alphas` / `target_alphas` dataset options): every
    /// modality of `inputs` gets `input_alpha`, every one of `targets` gets `target_alpha`, the
    /// others 0. A modality only in `inputs` is input-only, one only in `targets` target-only.
    pub fn single(
        inputs: &[&str],
        input_alpha: f64,
        targets: &[&str],
        target_alpha: f64,
    ) -> Result<Self, MaskError> {
        let mut modalities = BTreeMap::new();
        for name in inputs.iter().chain(targets) {
            let alphas = ModalityAlphas {
                input_alphas: vec![if inputs.contains(name) {
                    input_alpha
                } else {
                    0.0
                }],
                target_alphas: vec![if targets.contains(name) {
                    target_alpha
                } else {
                    0.0
                }],
                keep: None,
            };
            modalities.insert((*name).to_string(), alphas);
        }
        let config = Self {
            sampling_weights: None,
            modalities,
        };
        config.validate("<built>")?;
        Ok(config)
    }

    /// The mixtures shipped with fourm (`masking/alphas/*.toml`), by file stem.
    pub const SHIPPED: [(&'static str, &'static str); 7] = [
        (
            "mix_caption_bias_a0.2_a1.0",
            include_str!("../alphas/mix_caption_bias_a0.2_a1.0.toml"),
        ),
        (
            "mix_mod7_all2all_rgb2all_a0.5",
            include_str!("../alphas/mix_mod7_all2all_rgb2all_a0.5.toml"),
        ),
        (
            "mix_mod7_all2all_rgb2dense_a0.5",
            include_str!("../alphas/mix_mod7_all2all_rgb2dense_a0.5.toml"),
        ),
        (
            "mix_mod7_all2allmix_rgb2all_capbias",
            include_str!("../alphas/mix_mod7_all2allmix_rgb2all_capbias.toml"),
        ),
        (
            "mix_mod7_superres_caption_rgb_bias",
            include_str!("../alphas/mix_mod7_superres_caption_rgb_bias.toml"),
        ),
        (
            "synth_all2all_rgb2all_a0.5",
            include_str!("../alphas/synth_all2all_rgb2all_a0.5.toml"),
        ),
        (
            "synth_all2all_rgb2all_rgb2caption",
            include_str!("../alphas/synth_all2all_rgb2all_rgb2caption.toml"),
        ),
    ];

    /// A shipped mixture by name (see [`Self::SHIPPED`]), or an alphas file by path.
    pub fn named_or_load(name_or_path: &str) -> Result<Self, MaskError> {
        match Self::SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            Some((name, text)) => Self::parse_toml(text, name),
            None => Self::load(Path::new(name_or_path)),
        }
    }

    /// Reads a `.yaml`/`.yml` or `.toml` alphas file.
    pub fn load(path: &Path) -> Result<Self, MaskError> {
        let text = std::fs::read_to_string(path).map_err(|source| MaskError::AlphasRead {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::parse_toml(&text, &origin),
            _ => Self::parse_yaml(&text, &origin),
        }
    }

    /// Parses ml-4m's YAML.
    pub fn from_yaml_str(text: &str) -> Result<Self, MaskError> {
        Self::parse_yaml(text, "<yaml>")
    }

    /// Parses the TOML equivalent.
    pub fn from_toml_str(text: &str) -> Result<Self, MaskError> {
        Self::parse_toml(text, "<toml>")
    }

    /// The config as TOML (the weighted shape when it has sampling weights).
    pub fn to_toml_string(&self) -> String {
        let text = match &self.sampling_weights {
            Some(_) => toml::to_string(&WeightedFile {
                sampling_weights: self.sampling_weights.clone(),
                alphas_mixture: self.modalities.clone(),
            }),
            None => toml::to_string(&self.modalities),
        };
        // Plain maps of numbers and strings always serialize.
        text.unwrap_or_default()
    }

    /// Number of mixture components.
    pub fn components(&self) -> usize {
        self.modalities
            .values()
            .next()
            .map_or(0, |m| m.input_alphas.len())
    }

    /// Checks that every list has one entry per component, alphas are finite and non-negative,
    /// and the sampling weights are usable.
    pub fn validate(&self, origin: &str) -> Result<(), MaskError> {
        let bad = |modality: &str, reason: String| MaskError::Alphas {
            origin: origin.to_string(),
            modality: modality.to_string(),
            reason,
        };
        let n = self.components();
        if self.modalities.is_empty() || n == 0 {
            return Err(bad("*", "no modality or no mixture component".into()));
        }
        for (name, m) in &self.modalities {
            for (what, list) in [
                ("input_alphas", &m.input_alphas),
                ("target_alphas", &m.target_alphas),
            ] {
                if list.len() != n {
                    return Err(bad(
                        name,
                        format!("{what} has {} entries, expected {n}", list.len()),
                    ));
                }
                if let Some(a) = list.iter().find(|a| !a.is_finite() || **a < 0.0) {
                    return Err(bad(name, format!("{what} contains {a}, expected ≥ 0")));
                }
            }
            if let Some(keep) = &m.keep
                && keep.len() != n
            {
                return Err(bad(
                    name,
                    format!("keep has {} entries, expected {n}", keep.len()),
                ));
            }
        }
        if let Some(w) = &self.sampling_weights {
            if w.len() != n {
                return Err(bad(
                    "*",
                    format!("sampling_weights has {} entries, expected {n}", w.len()),
                ));
            }
            if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
                return Err(bad(
                    "*",
                    "sampling_weights must be ≥ 0 with a positive sum".into(),
                ));
            }
        }
        Ok(())
    }

    fn parse_yaml(text: &str, origin: &str) -> Result<Self, MaskError> {
        let value: serde_json::Value =
            serde_yaml_ng::from_str(text).map_err(|e| MaskError::AlphasParse {
                origin: origin.to_string(),
                source: Box::new(e),
            })?;
        Self::from_value(value, origin)
    }

    fn parse_toml(text: &str, origin: &str) -> Result<Self, MaskError> {
        let value: serde_json::Value =
            toml::from_str(text).map_err(|e| MaskError::AlphasParse {
                origin: origin.to_string(),
                source: Box::new(e),
            })?;
        Self::from_value(value, origin)
    }

    /// Both shapes, as ml-4m tells them apart: a top-level `alphas_mixture` (ml-4m: a
    /// `sampling_weights` key) means the weighted shape.
    fn from_value(value: serde_json::Value, origin: &str) -> Result<Self, MaskError> {
        let parse_err = |e: serde_json::Error| MaskError::AlphasParse {
            origin: origin.to_string(),
            source: Box::new(e),
        };
        let weighted = value.as_object().is_some_and(|o| {
            o.contains_key("alphas_mixture") || o.contains_key("sampling_weights")
        });
        let config = if weighted {
            let file: WeightedFile = serde_json::from_value(value).map_err(parse_err)?;
            Self {
                sampling_weights: file.sampling_weights,
                modalities: file.alphas_mixture,
            }
        } else {
            Self {
                sampling_weights: None,
                modalities: serde_json::from_value(value).map_err(parse_err)?,
            }
        };
        config.validate(origin)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOD7: &str = "
# Half rgb2all, half all2all
rgb@224:
  input_alphas: [1000.0, 0.5]
  target_alphas: [0., 0.]  # RGB is not a target
tok_rgb@224:
  input_alphas: [0., 0.5]
  target_alphas: [0.5, 0.5]
caption:
  input_alphas: [0., 0.5]
  target_alphas: [0.5, 0.5]
  keep: ['random', 'all']
";

    #[test]
    fn every_shipped_mixture_parses_and_names_resolve() {
        for (name, _) in AlphasConfig::SHIPPED {
            let c = AlphasConfig::named_or_load(name).unwrap();
            assert!(!c.modalities.is_empty(), "{name}");
        }
        let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/alphas"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml")
            })
            .count();
        assert_eq!(
            shipped,
            AlphasConfig::SHIPPED.len(),
            "every shipped file is listed"
        );
        assert!(AlphasConfig::named_or_load("no-such-mixture").is_err());
    }

    #[test]
    fn parses_ml4m_yaml_and_its_toml_equivalent() {
        let yaml = AlphasConfig::from_yaml_str(MOD7).unwrap();
        assert_eq!(yaml.components(), 2);
        assert_eq!(yaml.sampling_weights, None);
        assert_eq!(yaml.modalities["rgb@224"].input_alphas, vec![1000.0, 0.5]);
        assert_eq!(yaml.modalities["caption"].keep(1), KeepScheme::All);
        assert_eq!(yaml.modalities["tok_rgb@224"].keep(0), KeepScheme::Random);
        let toml = AlphasConfig::from_toml_str(&yaml.to_toml_string()).unwrap();
        assert_eq!(toml, yaml);
    }

    #[test]
    fn parses_the_weighted_shape() {
        let text = "
sampling_weights: [1.0, 0.5]
alphas_mixture:
  caption:
    input_alphas: [0.01, 5.0]
    target_alphas: [0.01, 0.0]
    keep: ['random', 'binary']
";
        let c = AlphasConfig::from_yaml_str(text).unwrap();
        assert_eq!(c.sampling_weights, Some(vec![1.0, 0.5]));
        assert_eq!(c.modalities["caption"].keep(1), KeepScheme::Binary);
        let back = AlphasConfig::from_toml_str(&c.to_toml_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_inconsistent_files_with_the_culprit() {
        let err = AlphasConfig::from_yaml_str(
            "a: {input_alphas: [1.0], target_alphas: [1.0]}\nb: {input_alphas: [1.0, 2.0], target_alphas: [1.0, 1.0]}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("`b`"), "{err}");
        let err = AlphasConfig::from_yaml_str("a: {input_alphas: [-1.0], target_alphas: [1.0]}")
            .unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
        let err = AlphasConfig::from_yaml_str(
            "a: {input_alphas: [1.0], target_alphas: [1.0], keep: ['sometimes']}",
        )
        .unwrap_err();
        assert!(matches!(err, MaskError::AlphasParse { .. }), "{err}");
        let err = AlphasConfig::from_yaml_str(
            "a: {input_alphas: [1.0], target_alphas: [1.0], typo_alphas: [1.0]}",
        )
        .unwrap_err();
        assert!(matches!(err, MaskError::AlphasParse { .. }), "{err}");
        let err = AlphasConfig::from_yaml_str(
            "sampling_weights: [1.0, 1.0]\nalphas_mixture:\n  a: {input_alphas: [1.0], target_alphas: [1.0]}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("sampling_weights"), "{err}");
        assert!(AlphasConfig::from_yaml_str("[1, 2").is_err());
    }

    #[test]
    fn single_dirichlet_marks_input_only_and_target_only_modalities() {
        let c =
            AlphasConfig::single(&["rgb@64", "caption"], 0.5, &["caption", "det"], 1.0).unwrap();
        assert_eq!(c.modalities["rgb@64"].target_alphas, vec![0.0]);
        assert_eq!(c.modalities["det"].input_alphas, vec![0.0]);
        assert_eq!(c.modalities["caption"].input_alphas, vec![0.5]);
        assert_eq!(c.modalities["caption"].target_alphas, vec![1.0]);
    }
}
