//! One MaskGIT step (ml-4m `maskgit_step_batched` / `guided_maskgit_step_batched`): predict
//! every remaining position of the target, sample a token for each, and commit the `count`
//! most confident ones.
//!
//! Confidence is the probability of the sampled token. At temperature 0 every confidence is 1
//! and ml-4m's choice falls to `torch.topk`'s tie-breaking; fourm breaks ties by position
//! (lowest first), and a [`GenerationHook`] may impose the positions instead.

use rand::Rng;

use crate::error::ModelError;
use crate::generate::generator::StepSettings;
use crate::generate::hook::{
    GenerationEvent, GenerationHook, ParallelMethod, ParallelStep, SelectionRequest,
};
use crate::generate::sampling::sample_rows;
use crate::generate::state::GenState;

/// Runs one MaskGIT step committing `count` tokens per sample.
pub(crate) fn maskgit_step(
    settings: &StepSettings<'_>,
    state: &mut GenState,
    target: &str,
    count: usize,
    rng: &mut impl Rng,
    hook: &mut dyn GenerationHook,
) -> Result<(), ModelError> {
    let candidates = state.remaining_positions(target)?;
    let n = candidates[0].len();
    if count > n {
        return Err(ModelError::generation(
            target,
            format!("a step commits {count} tokens but only {n} are left"),
        ));
    }
    if count == 0 {
        return Ok(());
    }
    let vocab = state.spec(target)?.vocab_size;
    let logits = settings.image_logits(state, target, &candidates)?;
    let (sampled, confidences) =
        sample_rows(&logits, vocab, settings.sampling, settings.temperature, rng);
    let request = SelectionRequest {
        step: settings.step,
        modality: target,
        count,
        candidates: &candidates,
        confidences: &confidences,
        sampled: &sampled,
    };
    let selected = match hook.select(&request) {
        Some(chosen) => checked(target, chosen, &candidates, count)?,
        None => most_confident(&candidates, &confidences, count),
    };
    for (b, row) in selected.iter().enumerate() {
        for &p in row {
            let i = candidates[b].binary_search(&p).expect("checked candidate");
            state.commit(target, b, p, sampled[b * n + i]);
        }
    }
    hook.on_event(&GenerationEvent::Parallel(ParallelStep {
        step: settings.step,
        modality: target,
        method: ParallelMethod::MaskGit,
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

/// Per sample the `count` candidates of highest confidence (ties: lowest position), ascending.
fn most_confident(candidates: &[Vec<usize>], confidences: &[f64], count: usize) -> Vec<Vec<usize>> {
    candidates
        .iter()
        .enumerate()
        .map(|(b, row)| {
            let conf = &confidences[b * row.len()..(b + 1) * row.len()];
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&i, &j| conf[j].total_cmp(&conf[i]));
            let mut chosen: Vec<usize> = order[..count].iter().map(|&i| row[i]).collect();
            chosen.sort_unstable();
            chosen
        })
        .collect()
}

/// A hook's choice, checked: per sample `count` distinct candidates, returned ascending.
fn checked(
    target: &str,
    chosen: Vec<Vec<usize>>,
    candidates: &[Vec<usize>],
    count: usize,
) -> Result<Vec<Vec<usize>>, ModelError> {
    if chosen.len() != candidates.len() {
        return Err(ModelError::generation(
            target,
            format!(
                "hook selected positions for {} samples, the batch has {}",
                chosen.len(),
                candidates.len()
            ),
        ));
    }
    chosen
        .into_iter()
        .zip(candidates)
        .enumerate()
        .map(|(b, (mut row, cands))| {
            row.sort_unstable();
            row.dedup();
            if row.len() != count || row.iter().any(|p| cands.binary_search(p).is_err()) {
                return Err(ModelError::generation(
                    target,
                    format!(
                        "hook must select {count} distinct remaining positions of sample {b}, got {row:?}"
                    ),
                ));
            }
            Ok(row)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_then_position_order() {
        let cands = vec![vec![1, 4, 6, 9], vec![0, 2, 3, 5]];
        let conf = [0.2, 0.9, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(
            most_confident(&cands, &conf, 2),
            vec![vec![4, 9], vec![0, 2]]
        );
    }

    #[test]
    fn hook_choices_are_checked() {
        let cands = vec![vec![1, 4, 6], vec![0, 2, 3]];
        assert_eq!(
            checked("t", vec![vec![6, 1], vec![3, 0]], &cands, 2).unwrap(),
            vec![vec![1, 6], vec![0, 3]]
        );
        assert!(checked("t", vec![vec![6, 1]], &cands, 2).is_err());
        assert!(checked("t", vec![vec![6, 6], vec![0, 3]], &cands, 2).is_err());
        assert!(checked("t", vec![vec![6, 2], vec![0, 3]], &cands, 2).is_err());
    }
}
