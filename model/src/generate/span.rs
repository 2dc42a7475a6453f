//! Merging a decoded span sequence back into its input (ml-4m `merge_span_masking` and
//! `merge_sequences_batched`): every sentinel `[S_k]` of the input is replaced by the tokens the
//! decoder produced after `[S_k]`.

use std::collections::HashMap;

use crate::generate::special_tokens::SpecialTokens;
use crate::generate::state::{ModalityState, padded_sequence};

/// Replaces each sentinel of `input` by the run that follows the same sentinel in `decoded`.
/// Decoded tokens before the first sentinel, and runs of sentinels absent from the input, are
/// dropped; a sentinel that occurs twice in `decoded` collects both runs (as ml-4m does).
pub fn merge_spans(input: &[i64], decoded: &[i64], specials: &SpecialTokens) -> Vec<i64> {
    let mut runs: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut current = None;
    for &t in decoded {
        if specials.is_sentinel(t) {
            current = Some(t);
        } else if let Some(s) = current {
            runs.entry(s).or_default().push(t);
        }
    }
    let mut out = Vec::with_capacity(input.len() + decoded.len());
    for &t in input {
        if specials.is_sentinel(t) {
            out.extend(runs.get(&t).into_iter().flatten());
        } else {
            out.push(t);
        }
    }
    out
}

/// The state of a sequence after autoregressive decoding: per sample, its visible input (or
/// `[S_1]` if none) merged with the decoded ids, right-padded with `[PAD]`. Every merged token is
/// an input and nothing is left to generate.
pub(crate) fn merged_sequence(
    current: &ModalityState,
    batch: usize,
    decoded: &[Vec<i64>],
    specials: &SpecialTokens,
    s1: i64,
) -> ModalityState {
    let rows: Vec<Vec<i64>> = (0..batch)
        .map(|b| {
            let mut input = current.visible(b);
            if input.is_empty() {
                input.push(s1);
            }
            merge_spans(&input, &decoded[b], specials)
        })
        .collect();
    padded_sequence(&rows, specials.pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_replaced_by_their_runs() {
        let sp = SpecialTokens::ml4m_wordpiece();
        // input: "a [S_1] d [S_2]", decoded: "[S_1] b c [S_2] e [S_3]"
        let merged = merge_spans(&[300, 5, 301, 6], &[5, 400, 401, 6, 402, 7], &sp);
        assert_eq!(merged, vec![300, 400, 401, 301, 402]);
        // tokens after the final sentinel are dropped; a repeated sentinel collects both runs
        assert_eq!(
            merge_spans(&[5], &[5, 3, 3, 6, 900, 5, 800], &sp),
            vec![3, 3, 800]
        );
        assert_eq!(merge_spans(&[5], &[900, 6], &sp), Vec::<i64>::new());
    }

    #[test]
    fn batched_merge_pads_rows() {
        let sp = SpecialTokens::ml4m_wordpiece();
        let current = ModalityState {
            data: crate::batch::ModalityData::Tokens(vec![5, 5, 0, 6, 5, 5, 0, 6]),
            len: 4,
            input_mask: vec![false, true, true, true, false, true, true, true],
            target_mask: vec![true, false, false, false, true, false, false, false],
        };
        let m = merged_sequence(&current, 2, &[vec![5, 400, 3, 6], vec![5, 3, 6]], &sp, 5);
        assert_eq!(m.len, 2);
        assert_eq!(m.ids(), &[400, 3, 3, 0]);
        assert_eq!(m.input_mask, vec![false, false, false, true]);
        assert!(m.target_mask.iter().all(|&t| t));
    }
}
