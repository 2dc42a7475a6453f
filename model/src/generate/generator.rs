//! Runs a [`GenerationPlan`] on a [`GenState`] (ml-4m `GenerationSampler.generate`): the plan's
//! targets in order, each expanded into its steps, step `i` of the chain sampling from a stream
//! seeded by `seed + i`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::ModelError;
use crate::fourm::FourM;
use crate::generate::autoregressive::autoregressive;
use crate::generate::chain::{GenerationPlan, Method, TargetPlan};
use crate::generate::context::EncodedContext;
use crate::generate::guidance::{combine, is_guided, unconditional};
use crate::generate::hook::{GenerationEvent, GenerationHook};
use crate::generate::maskgit::maskgit_step;
use crate::generate::roar::roar_step;
use crate::generate::sampling::Sampling;
use crate::generate::schedule::TokenSchedule;
use crate::generate::special_tokens::SpecialTokens;
use crate::generate::state::GenState;

/// Any-to-any generation with a 4M model.
#[derive(Debug, Clone, Copy)]
pub struct Generator<'m> {
    model: &'m FourM,
    specials: &'m SpecialTokens,
}

impl<'m> Generator<'m> {
    /// A generator for `model`, whose sequence modalities use the special ids `specials`.
    pub fn new(model: &'m FourM, specials: &'m SpecialTokens) -> Self {
        Self { model, specials }
    }

    /// Generates every target of `plan`, in order, starting from `state` (conditions, and
    /// optionally targets already set up or partly filled); returns the final state. Targets
    /// missing from `state` start empty. `hook` sees every step.
    pub fn generate(
        &self,
        state: GenState,
        plan: &GenerationPlan,
        hook: &mut dyn GenerationHook,
    ) -> Result<GenState, ModelError> {
        plan.validate(self.model.modalities())?;
        if state.registry() != self.model.modalities() {
            return Err(ModelError::generation(
                "*",
                "the state was built for another modality registry",
            ));
        }
        let mut state = state;
        let mut conditions = match &plan.guidance_conditions {
            Some(c) => c.clone(),
            None => state
                .iter()
                .map(|(name, _)| name.to_string())
                .filter(|name| plan.targets.iter().all(|t| &t.modality != name))
                .collect(),
        };
        let mut step = 0;
        for target in &plan.targets {
            let name = target.modality.as_str();
            if state.get(name).is_none() {
                state = state.with_empty_target(name, target.tokens, self.specials)?;
            }
            self.run_target(&mut state, target, plan, &conditions, &mut step, hook)?;
            hook.on_event(&GenerationEvent::TargetDone {
                modality: name,
                state: &state,
            });
            if plan.grow_conditioning {
                conditions.push(target.modality.clone());
            }
        }
        Ok(state)
    }

    fn run_target(
        &self,
        state: &mut GenState,
        target: &TargetPlan,
        plan: &GenerationPlan,
        conditions: &[String],
        step: &mut usize,
        hook: &mut dyn GenerationHook,
    ) -> Result<(), ModelError> {
        let name = target.modality.as_str();
        let settings = |step: usize, temperature: f64, guidance_scale: f64| StepSettings {
            model: self.model,
            specials: self.specials,
            step,
            sampling: &target.sampling,
            temperature,
            guidance_scale,
            conditions,
        };
        let (steps, schedule) = match target.method {
            Method::Autoregressive { stop } => {
                let s = settings(*step, target.sampling.temperature, target.guidance.scale);
                let mut rng = ChaCha8Rng::seed_from_u64(plan.seed.wrapping_add(*step as u64));
                autoregressive(&s, state, name, stop, plan.kv_cache, &mut rng, hook)?;
                *step += 1;
                return Ok(());
            }
            Method::MaskGit { steps, schedule } => (steps, schedule),
            Method::Roar { steps } => (steps, TokenSchedule::Linear),
        };
        let remaining = state.remaining_positions(name)?[0].len();
        let total = target.tokens.unwrap_or(remaining);
        if total == 0 || total > remaining {
            return Err(ModelError::generation(
                name,
                format!("{total} tokens to decode, {remaining} positions left"),
            ));
        }
        let tokens = schedule.tokens(steps, total)?;
        let temperatures = target
            .temperature_schedule
            .temperatures(target.sampling.temperature, &tokens);
        let scales = target
            .guidance
            .schedule
            .scales(target.guidance.scale, tokens.len());
        for ((&count, &temperature), &scale) in tokens.iter().zip(&temperatures).zip(&scales) {
            let s = settings(*step, temperature, scale);
            let mut rng = ChaCha8Rng::seed_from_u64(plan.seed.wrapping_add(*step as u64));
            match target.method {
                Method::Roar { .. } => roar_step(&s, state, name, count, &mut rng, hook)?,
                _ => maskgit_step(&s, state, name, count, &mut rng, hook)?,
            }
            *step += 1;
        }
        Ok(())
    }
}

/// Everything one step needs besides the state.
pub(crate) struct StepSettings<'a> {
    pub model: &'a FourM,
    pub specials: &'a SpecialTokens,
    /// Index in the chain.
    pub step: usize,
    pub sampling: &'a Sampling,
    /// Temperature of this step (from the schedule).
    pub temperature: f64,
    /// Guidance scale of this step (from the schedule).
    pub guidance_scale: f64,
    /// Modalities emptied by the unconditional pass.
    pub conditions: &'a [String],
}

impl StepSettings<'_> {
    /// Logits of an image-like target at `positions`, guided when the step says so,
    /// `[b, n, vocab]` on the host.
    pub fn image_logits(
        &self,
        state: &GenState,
        target: &str,
        positions: &[Vec<usize>],
    ) -> Result<Vec<f32>, ModelError> {
        let mut logits = EncodedContext::encode(self.model, state)?
            .image_logits(self.model, target, positions)?;
        if is_guided(self.guidance_scale, self.conditions) {
            let uncond = unconditional(state, self.conditions, self.specials)?;
            let u = EncodedContext::encode(self.model, &uncond)?
                .image_logits(self.model, target, positions)?;
            combine(&mut logits, &u, self.guidance_scale);
        }
        Ok(logits)
    }
}
