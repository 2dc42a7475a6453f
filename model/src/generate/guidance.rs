//! Classifier-free guidance (ml-4m `guided_*_step_batched`): a conditional pass on the state as
//! it is and an unconditional pass with the guided conditions emptied, combined as
//! `uncond + (cond − uncond) · scale`.

use serde::{Deserialize, Serialize};

use crate::batch::ModalityData;
use crate::error::ModelError;
use crate::generate::schedule::GuidanceSchedule;
use crate::generate::special_tokens::SpecialTokens;
use crate::generate::state::{GenState, ModalityState};

/// Guidance of one target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guidance {
    /// Scale at the first step; `1` = no guidance (a single pass, as ml-4m).
    pub scale: f64,
    /// Scale of the following steps.
    #[serde(default = "constant")]
    pub schedule: GuidanceSchedule,
}

fn constant() -> GuidanceSchedule {
    GuidanceSchedule::Constant
}

impl Guidance {
    /// No guidance.
    pub fn none() -> Self {
        Self::constant(1.0)
    }

    /// A constant scale.
    pub fn constant(scale: f64) -> Self {
        Self {
            scale,
            schedule: GuidanceSchedule::Constant,
        }
    }
}

impl Default for Guidance {
    fn default() -> Self {
        Self::none()
    }
}

/// Whether a step at `scale` with these conditions needs the unconditional pass.
pub(crate) fn is_guided(scale: f64, conditions: &[String]) -> bool {
    scale != 1.0 && !conditions.is_empty()
}

/// The state with every modality of `conditions` emptied: image-like and pixel modalities are
/// entirely masked out of the encoder, sequences keep only a visible `[S_1]` (ml-4m
/// `empty_img_modality` / `empty_seq_modality`; the rest of an emptied sequence is masked, so
/// the encoder sees the same thing).
pub fn unconditional(
    state: &GenState,
    conditions: &[String],
    specials: &SpecialTokens,
) -> Result<GenState, ModelError> {
    let mut out = state.clone();
    for name in conditions {
        let Some(m) = state.get(name) else {
            continue;
        };
        let emptied = if state.spec(name)?.is_sequence() {
            let batch = state.batch_size();
            ModalityState {
                data: ModalityData::Tokens(vec![specials.sentinel(1)?; batch]),
                len: 1,
                input_mask: vec![false; batch],
                target_mask: vec![true; batch],
            }
        } else {
            ModalityState {
                input_mask: vec![true; m.input_mask.len()],
                ..m.clone()
            }
        };
        out.replace(name, emptied);
    }
    Ok(out)
}

/// `uncond + (cond − uncond) · scale`, elementwise in f32 as ml-4m computes it; written into
/// `cond`.
pub(crate) fn combine(cond: &mut [f32], uncond: &[f32], scale: f64) {
    let s = scale as f32;
    for (c, &u) in cond.iter_mut().zip(uncond) {
        *c = u + (*c - u) * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modality::{Modalities, ModalitySpec};

    #[test]
    fn emptied_conditions_and_combination() {
        let reg = Modalities::new(vec![
            ModalitySpec::image_tokens("tok_depth", 8, [1, 2]),
            ModalitySpec::image_tokens("tok_rgb", 8, [1, 2]),
            ModalitySpec::sequence("caption", 50, 8),
        ])
        .unwrap();
        let sp = SpecialTokens::ml4m_wordpiece();
        let state = GenState::new(&reg, 1)
            .unwrap()
            .with_tokens("tok_depth", vec![1, 2])
            .unwrap()
            .with_sequence("caption", &[vec![30, 31]], &sp)
            .unwrap()
            .with_empty_target("tok_rgb", None, &sp)
            .unwrap();
        let u = unconditional(&state, &["tok_depth".into(), "caption".into()], &sp).unwrap();
        assert_eq!(u.get("tok_depth").unwrap().input_mask, vec![true, true]);
        assert_eq!(u.sequences("caption").unwrap(), vec![vec![5]]);
        assert_eq!(u.get("tok_rgb"), state.get("tok_rgb"));

        let mut cond = [1.0f32, 2.0];
        combine(&mut cond, &[0.5, 2.0], 3.0);
        assert_eq!(cond, [2.0, 2.0]);
        assert!(!is_guided(1.0, &["x".into()]));
        assert!(!is_guided(3.0, &[]));
        assert!(is_guided(3.0, &["x".into()]));
    }
}
