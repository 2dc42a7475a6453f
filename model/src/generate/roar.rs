//! One ROAR step, random-order autoregression (ml-4m `roar_step_batched`): a random subset of
//! the remaining positions is predicted, and every one of them is sampled and committed.
//!
//! As in ml-4m, the random order is one key per grid position shared by the whole batch
//! (`argsort(target_mask + rand · 1e-6)`), drawn from the step's seeded stream before sampling.

use rand::Rng;

use crate::error::ModelError;
use crate::generate::generator::StepSettings;
use crate::generate::hook::{GenerationEvent, GenerationHook, ParallelMethod, ParallelStep};
use crate::generate::sampling::sample_rows;
use crate::generate::state::GenState;

/// Runs one ROAR step decoding `count` random positions per sample (fewer if fewer are left).
pub(crate) fn roar_step(
    settings: &StepSettings<'_>,
    state: &mut GenState,
    target: &str,
    count: usize,
    rng: &mut impl Rng,
    hook: &mut dyn GenerationHook,
) -> Result<(), ModelError> {
    let remaining = state.remaining_positions(target)?;
    let len = state.get(target).map_or(0, |m| m.len);
    let keys: Vec<f64> = (0..len).map(|_| rng.random::<f64>()).collect();
    let take = count.min(remaining[0].len());
    if take == 0 {
        return Ok(());
    }
    let candidates: Vec<Vec<usize>> = remaining
        .into_iter()
        .map(|mut row| {
            row.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]).then(a.cmp(&b)));
            row.truncate(take);
            row
        })
        .collect();
    let vocab = state.spec(target)?.vocab_size;
    let logits = settings.image_logits(state, target, &candidates)?;
    let (sampled, _) = sample_rows(&logits, vocab, settings.sampling, settings.temperature, rng);
    for (b, row) in candidates.iter().enumerate() {
        for (i, &p) in row.iter().enumerate() {
            state.commit(target, b, p, sampled[b * take + i]);
        }
    }
    let selected: Vec<Vec<usize>> = candidates
        .iter()
        .map(|row| {
            let mut r = row.clone();
            r.sort_unstable();
            r
        })
        .collect();
    hook.on_event(&GenerationEvent::Parallel(ParallelStep {
        step: settings.step,
        modality: target,
        method: ParallelMethod::Roar,
        temperature: settings.temperature,
        guidance_scale: settings.guidance_scale,
        candidates: &candidates,
        vocab,
        logits: &logits,
        sampled: &sampled,
        selected: &selected,
        state,
    }));
    Ok(())
}
