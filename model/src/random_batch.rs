//! Batches with uniformly random token ids and masks in ml-4m's layout, for benchmarks and tests.
//! (ml-4m's Dirichlet masking lives in `fourm-data`; this only needs to be valid and cheap.)

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::batch::{Batch, ModalityBatch, ModalityData};
use crate::modality::{Modalities, ModalityKind};

/// A batch of `batch` samples over every modality, each sample with `inputs` encoder tokens and
/// `targets` decoder tokens spread at random over the modalities (within their capacity).
pub fn random_batch(
    modalities: &Modalities,
    batch: usize,
    inputs: usize,
    targets: usize,
    seed: u64,
) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let specs: Vec<_> = modalities.iter().collect();
    let mut out: BTreeMap<String, ModalityBatch> = specs
        .iter()
        .map(|s| {
            let n = batch * s.tensor_len();
            let data = match s.kind {
                ModalityKind::ImagePixels {
                    grid,
                    patch_size,
                    channels,
                } => {
                    let px = batch * channels * grid[0] * grid[1] * patch_size * patch_size;
                    ModalityData::Pixels((0..px).map(|_| rng.random_range(-1.0..1.0)).collect())
                }
                _ => ModalityData::Tokens(vec![0; n]),
            };
            let entry = ModalityBatch {
                data,
                input_mask: vec![true; n],
                target_mask: vec![true; n],
                decoder_attention_mask: vec![0; n],
            };
            (s.name.clone(), entry)
        })
        .collect();
    for b in 0..batch {
        // Input budget per modality, then target budget within what is left.
        let mut in_budget = vec![0usize; specs.len()];
        let mut tgt_budget = vec![0usize; specs.len()];
        for _ in 0..inputs {
            let open: Vec<usize> = (0..specs.len())
                .filter(|&i| in_budget[i] < specs[i].max_tokens)
                .collect();
            if let Some(&i) = open.get(rng.random_range(0..open.len().max(1))) {
                in_budget[i] += 1;
            }
        }
        for _ in 0..targets {
            let room = |i: usize| match specs[i].kind {
                _ if specs[i].input_only => 0,
                ModalityKind::Sequence { .. } => specs[i].max_tokens + 1,
                _ => specs[i].max_tokens - in_budget[i],
            };
            let open: Vec<usize> = (0..specs.len())
                .filter(|&i| tgt_budget[i] < room(i))
                .collect();
            if let Some(&i) = open.get(rng.random_range(0..open.len().max(1))) {
                tgt_budget[i] += 1;
            }
        }
        for (i, spec) in specs.iter().enumerate() {
            let len = spec.tensor_len();
            let m = out.get_mut(&spec.name).expect("every modality");
            let base = b * len;
            let vocab = spec.vocab_size.max(1) as i64;
            if let ModalityData::Tokens(ids) = &mut m.data {
                for id in &mut ids[base..base + len] {
                    *id = rng.random_range(0..vocab);
                }
            }
            let (n_in, n_tgt) = (in_budget[i], tgt_budget[i]);
            match spec.kind {
                ModalityKind::Sequence { .. } => {
                    // Input at [0, n_in), target at [n_in, n_in + n_tgt): ml-4m's layout with the
                    // target placed at the input budget.
                    m.input_mask[base..base + n_in].fill(false);
                    m.target_mask[base + n_in..base + n_in + n_tgt].fill(false);
                    m.decoder_attention_mask[base + n_in..base + n_in + n_tgt].fill(1);
                    if let ModalityData::Tokens(ids) = &mut m.data {
                        ids[base + n_in + n_tgt..base + len].fill(0);
                    }
                }
                _ => {
                    let mut perm: Vec<usize> = (0..len).collect();
                    perm.shuffle(&mut rng);
                    for &p in &perm[..n_in] {
                        m.input_mask[base + p] = false;
                    }
                    let mut tgt: Vec<usize> = perm[n_in..n_in + n_tgt].to_vec();
                    tgt.sort_unstable();
                    for &p in &tgt {
                        m.target_mask[base + p] = false;
                    }
                    if let Some(&first) = tgt.first() {
                        m.decoder_attention_mask[base + first] = n_tgt as i32;
                    }
                }
            }
        }
    }
    Batch {
        batch_size: batch,
        modalities: out,
    }
}
