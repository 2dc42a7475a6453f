//! Span masking of sequences with sentinel tokens, and the span layout of the masked tensor
//! (ml-4m `simple_span_masking`, `chunk_span_masking`, `UnifiedMasking.sequence_mask`;
//! 4m-spec.md §2.3).
//!
//! Each unit (a token, or a chunk of tokens) is kept with probability `keep_prob`. Every maximal
//! run of dropped units becomes one sentinel `[S_k]` (k = 1, 2, …) in the input; the target is
//! `[S_1] run₁ [S_2] run₂ … [S_K] run_K [S_{K+1}]`. `[S_0]` is never used.
//!
//! Layout of the tensor (length `2·(max_tokens+1)`, `[PAD]` elsewhere): the input sequence at
//! `[0, len(input))`, the target sequence at `[input_budget, input_budget + len(target))` — the
//! offset is the input *budget*, not the input length.

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::alphas::KeepScheme;
use crate::masked::{MaskedModality, MaskedTensor};

/// ml-4m lowers the keep probability by this factor while the input is over budget.
const KEEP_PROB_DECAY: f64 = 0.9;
/// After this many decays the input is fully masked (a guard; 0.9^2000 ≈ 1e-92).
const MAX_DECAYS: usize = 2000;

/// The special token ids span masking needs (from the text tokenizer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceTokens {
    /// `[PAD]`, the filler of the layout.
    pub pad: u32,
    /// `[EOS]`, appended to every sequence before truncation.
    pub eos: u32,
    /// `sentinels[k]` is the id of `[S_k]`.
    pub sentinels: Vec<u32>,
}

impl SequenceTokens {
    /// Whether `id` is a sentinel.
    pub fn is_sentinel(&self, id: u32) -> bool {
        self.sentinels.contains(&id)
    }

    /// Sentinels needed to span-mask up to `units` units: `⌈units/2⌉` runs plus the final
    /// sentinel, numbered from 1.
    pub fn needed_for(units: usize) -> usize {
        units.div_ceil(2) + 2
    }
}

/// Splits `units` into an input and a target sequence by span masking.
/// Returns `None` when the tokenizer has too few sentinels.
pub fn span_mask<U: AsRef<[u32]>, R: RngCore>(
    units: &[U],
    tokens: &SequenceTokens,
    keep_prob: f64,
    rng: &mut R,
) -> Option<(Vec<u32>, Vec<u32>)> {
    let mut input = Vec::new();
    let mut target = Vec::new();
    let mut previous_masked = false;
    let mut spans = 0;
    for unit in units {
        let masked = rng.random::<f64>() > keep_prob;
        if masked {
            if !previous_masked {
                spans += 1;
                let s = *tokens.sentinels.get(spans)?;
                input.push(s);
                target.push(s);
            }
            target.extend_from_slice(unit.as_ref());
        } else {
            input.extend_from_slice(unit.as_ref());
        }
        previous_masked = masked;
    }
    target.push(*tokens.sentinels.get(spans + 1)?);
    Some((input, target))
}

/// Masks one sequence (units already end with `[EOS]` and are truncated to `max_tokens`).
pub fn mask_sequence<U: AsRef<[u32]>, R: RngCore>(
    units: &[U],
    max_tokens: usize,
    input_budget: usize,
    target_budget: Option<usize>,
    keep: KeepScheme,
    tokens: &SequenceTokens,
    rng: &mut R,
) -> Result<MaskedModality, String> {
    let too_few = || {
        format!(
            "the tokenizer has {} sentinels, span masking {} units needs more",
            tokens.sentinels.len(),
            units.len()
        )
    };
    let (input, mut target) = if input_budget == 0 {
        let (_, target) = span_mask(units, tokens, 0.0, rng).ok_or_else(too_few)?;
        (Vec::new(), target)
    } else {
        let mut keep_prob = match keep {
            KeepScheme::Random => rng.random::<f64>(),
            KeepScheme::All => 1.0,
            KeepScheme::Binary => f64::from(u8::from(rng.random::<bool>())),
        };
        let mut split = span_mask(units, tokens, keep_prob, rng).ok_or_else(too_few)?;
        let mut decays = 0;
        while split.0.len() > input_budget {
            decays += 1;
            keep_prob = if decays >= MAX_DECAYS {
                -1.0
            } else {
                keep_prob * KEEP_PROB_DECAY
            };
            split = span_mask(units, tokens, keep_prob, rng).ok_or_else(too_few)?;
        }
        split
    };
    if let Some(budget) = target_budget
        && target.len() > budget
    {
        target = truncate_target(&target, budget, tokens, rng);
    }
    layout(&input, &target, max_tokens, input_budget, tokens.pad)
}

/// Keeps `budget` target tokens starting at a random sentinel (not the final one when there
/// are several); when fewer than `budget` tokens follow it, keeps the suffix from the earliest
/// sentinel that fits.
fn truncate_target<R: RngCore>(
    target: &[u32],
    budget: usize,
    tokens: &SequenceTokens,
    rng: &mut R,
) -> Vec<u32> {
    let sentinels: Vec<usize> = target
        .iter()
        .enumerate()
        .filter(|(_, t)| tokens.is_sentinel(**t))
        .map(|(i, _)| i)
        .collect();
    let choices = sentinels.len().saturating_sub(1).max(1);
    let start = sentinels[rng.random_range(0..choices).min(sentinels.len() - 1)];
    if target.len() - start >= budget {
        return target[start..start + budget].to_vec();
    }
    sentinels
        .iter()
        .find(|&&i| target.len() - i <= budget)
        .map_or_else(Vec::new, |&i| target[i..].to_vec())
}

/// Writes input and target into the `2·(max_tokens+1)` layout.
fn layout(
    input: &[u32],
    target: &[u32],
    max_tokens: usize,
    input_budget: usize,
    pad: u32,
) -> Result<MaskedModality, String> {
    let len = 2 * (max_tokens + 1);
    if input.len() > len || input_budget + target.len() > len {
        return Err(format!(
            "input ({}) and target ({} at offset {input_budget}) do not fit the layout of length {len}",
            input.len(),
            target.len()
        ));
    }
    let mut tensor = vec![i64::from(pad); len];
    let mut input_mask = vec![true; len];
    let mut target_mask = vec![true; len];
    let mut attention = vec![0; len];
    for (i, &t) in input.iter().enumerate() {
        tensor[i] = i64::from(t);
        input_mask[i] = false;
    }
    for (i, &t) in target.iter().enumerate() {
        let p = input_budget + i;
        tensor[p] = i64::from(t);
        target_mask[p] = false;
        attention[p] = 1;
    }
    Ok(MaskedModality {
        tensor: MaskedTensor::Tokens(tensor),
        input_mask,
        target_mask,
        decoder_attention_mask: attention,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fourm_plan::rng_for;

    fn tokens() -> SequenceTokens {
        SequenceTokens {
            pad: 0,
            eos: 3,
            sentinels: (4..24).collect(),
        }
    }

    fn singles(ids: &[u32]) -> Vec<[u32; 1]> {
        ids.iter().map(|&t| [t]).collect()
    }

    #[test]
    fn span_masking_reassembles_the_sequence() {
        let t = tokens();
        let seq: Vec<u32> = (30..45).collect();
        let mut rng = rng_for(&[1]);
        for keep in [0.0, 0.3, 0.7, 1.0] {
            let (input, target) = span_mask(&singles(&seq), &t, keep, &mut rng).unwrap();
            // Replace each input sentinel by its span from the target.
            let mut merged = Vec::new();
            for &tok in &input {
                if t.is_sentinel(tok) {
                    let at = target.iter().position(|&x| x == tok).unwrap();
                    merged.extend(target[at + 1..].iter().take_while(|x| !t.is_sentinel(**x)));
                } else {
                    merged.push(tok);
                }
            }
            assert_eq!(merged, seq, "keep {keep}");
            assert!(t.is_sentinel(*target.last().unwrap()));
            assert!(!input.contains(&t.sentinels[0]) && !target.contains(&t.sentinels[0]));
        }
        let (input, target) = span_mask(&singles(&seq), &t, 1.0, &mut rng).unwrap();
        assert_eq!((input, target), (seq.clone(), vec![5]));
        let (input, target) = span_mask(&singles(&seq), &t, -1.0, &mut rng).unwrap();
        assert_eq!(input, vec![5]);
        assert_eq!(target.len(), seq.len() + 2);
    }

    #[test]
    fn layout_puts_the_target_at_the_input_budget() {
        // parity-a sample 0: budgets 5 / 3, input [S_1] vi [S_2], target [S_1] su fi.
        let m = layout(&[5, 86, 6], &[5, 78, 36], 16, 5, 0).unwrap();
        let mut expected = vec![0i64; 34];
        expected[..3].copy_from_slice(&[5, 86, 6]);
        expected[5..8].copy_from_slice(&[5, 78, 36]);
        assert_eq!(m.tensor, MaskedTensor::Tokens(expected));
        assert_eq!(m.num_inputs(), 3);
        assert_eq!(m.decoder_attention_mask[5..8], [1, 1, 1]);
        assert_eq!(m.decoder_attention_mask.iter().sum::<i32>(), 3);
        assert!(layout(&[1; 3], &[1; 30], 16, 5, 0).is_err());
    }

    #[test]
    fn sequences_respect_both_budgets() {
        let t = tokens();
        let mut seq: Vec<u32> = (30..45).collect();
        seq.push(3);
        let mut rng = rng_for(&[2]);
        for (inb, tgb) in [
            (0, Some(4)),
            (3, Some(2)),
            (16, Some(16)),
            (5, None),
            (1, Some(0)),
        ] {
            for keep in [KeepScheme::Random, KeepScheme::All, KeepScheme::Binary] {
                let m = mask_sequence(&singles(&seq), 16, inb, tgb, keep, &t, &mut rng).unwrap();
                assert!(m.num_inputs() <= inb);
                if let Some(b) = tgb {
                    assert!(m.num_targets() <= b);
                }
                let tensor = m.tensor.tokens();
                let first_target = m.target_mask.iter().position(|x| !x);
                if let Some(p) = first_target {
                    assert_eq!(p, inb);
                    assert!(
                        t.is_sentinel(tensor[p] as u32),
                        "targets start with a sentinel"
                    );
                }
                for (i, (&a, &b)) in m.input_mask.iter().zip(&m.target_mask).enumerate() {
                    if a && b {
                        assert_eq!(tensor[i], 0, "padding at {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_starts_at_a_sentinel() {
        let t = tokens();
        let target = [5, 30, 31, 6, 32, 7, 33, 34, 35, 8];
        let mut rng = rng_for(&[9]);
        for budget in 0..target.len() {
            for _ in 0..20 {
                let cut = truncate_target(&target, budget, &t, &mut rng);
                assert!(cut.len() <= budget);
                if budget > 0 {
                    assert!(t.is_sentinel(cut[0]), "{cut:?}");
                }
                let start = target
                    .iter()
                    .position(|&x| x == cut.first().copied().unwrap_or(0));
                if let Some(s) = start {
                    assert_eq!(&target[s..s + cut.len()], &cut[..]);
                }
            }
        }
    }
}
