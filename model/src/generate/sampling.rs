//! Token sampling (ml-4m `GenerationSampler.sample_tokens` and `top_k_top_p_filtering`):
//! greedy at temperature 0, otherwise top-k / nucleus filtering, a softmax at the temperature
//! and one multinomial draw per row. Runs on the host over logits read back from the device.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Temperatures at or below this decode greedily (ml-4m: `np.isclose(t, 0, atol=1e-10)`).
pub const GREEDY_TEMPERATURE: f64 = 1e-10;

/// Top-k filtering: keep the `k` largest logits (ties with the `k`-th kept too).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopK {
    /// No top-k filtering (ml-4m `top_k=0`).
    #[default]
    Off,
    /// Keep `k` logits (ml-4m: an `int` top-k).
    Count(usize),
    /// Keep `⌊f · vocab⌋` logits (ml-4m: a `float` top-k).
    Fraction(f64),
}

/// How tokens are drawn from logits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Softmax temperature; `0` = greedy (argmax).
    pub temperature: f64,
    /// Top-k filtering.
    #[serde(default)]
    pub top_k: TopK,
    /// Nucleus filtering: keep the smallest prefix of the sorted distribution whose mass exceeds
    /// `top_p` (`0` = off).
    #[serde(default)]
    pub top_p: f64,
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::with_temperature(0.0)
    }

    /// Plain softmax sampling at `temperature`, no filtering.
    pub fn with_temperature(temperature: f64) -> Self {
        Self {
            temperature,
            top_k: TopK::Off,
            top_p: 0.0,
        }
    }

    /// Checks the ranges (`modality` names the target in the error).
    pub fn validate(&self, modality: &str) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::generation(modality, reason));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature {} is not >= 0", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top_p {} outside [0, 1]", self.top_p));
        }
        if let TopK::Fraction(f) = self.top_k
            && !(f > 0.0 && f <= 1.0)
        {
            return bad(format!("top_k fraction {f} outside (0, 1]"));
        }
        Ok(())
    }
}

/// Draws one token per row of `logits` (`[rows, vocab]`, row-major) at `temperature`. Returns
/// the tokens and the probability each had under the (filtered) distribution; 1 when greedy.
pub fn sample_rows(
    logits: &[f32],
    vocab: usize,
    sampling: &Sampling,
    temperature: f64,
    rng: &mut impl Rng,
) -> (Vec<i64>, Vec<f64>) {
    let rows = logits.chunks_exact(vocab);
    if temperature.abs() <= GREEDY_TEMPERATURE {
        let tokens: Vec<i64> = rows.map(|r| argmax(r) as i64).collect();
        let probs = vec![1.0; tokens.len()];
        return (tokens, probs);
    }
    let mut row = vec![0.0f32; vocab];
    let mut tokens = Vec::with_capacity(logits.len() / vocab.max(1));
    let mut probs = Vec::with_capacity(tokens.capacity());
    for r in rows {
        row.copy_from_slice(r);
        filter_top_k(&mut row, sampling.top_k);
        filter_top_p(&mut row, sampling.top_p);
        let p = softmax(&row, temperature);
        let token = draw(&p, rng);
        tokens.push(token as i64);
        probs.push(p[token]);
    }
    (tokens, probs)
}

/// Index of the largest value, the first one on ties (`torch.argmax`).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Sets logits below the `k`-th largest to `-inf`.
fn filter_top_k(row: &mut [f32], top_k: TopK) {
    let k = match top_k {
        TopK::Off => return,
        TopK::Count(k) => k.min(row.len()),
        TopK::Fraction(f) => ((f * row.len() as f64) as usize).min(row.len()),
    };
    if k == 0 {
        return;
    }
    let mut sorted = row.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    for v in row.iter_mut() {
        if *v < kth {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Nucleus filtering as ml-4m: sort descending, remove tokens whose cumulative probability
/// (softmax of the unscaled logits) exceeds `top_p`, shifted by one so that the first token above
/// the threshold stays.
fn filter_top_p(row: &mut [f32], top_p: f64) {
    if top_p <= 0.0 {
        return;
    }
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let sorted: Vec<f32> = order.iter().map(|&i| row[i]).collect();
    let p = softmax(&sorted, 1.0);
    let mut cum = 0.0;
    let mut previous_over = false;
    for (rank, &i) in order.iter().enumerate() {
        cum += p[rank];
        if rank > 0 && previous_over {
            row[i] = f32::NEG_INFINITY;
        }
        previous_over = cum > top_p;
    }
}

/// `softmax(row / temperature)` in f64; `-inf` entries get probability 0.
fn softmax(row: &[f32], temperature: f64) -> Vec<f64> {
    let max = f64::from(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let e: Vec<f64> = row
        .iter()
        .map(|&v| {
            if v == f32::NEG_INFINITY {
                0.0
            } else {
                ((f64::from(v) - max) / temperature).exp()
            }
        })
        .collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// One multinomial draw.
fn draw(p: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.random::<f64>();
    let mut cum = 0.0;
    let mut last = 0;
    for (i, &pi) in p.iter().enumerate() {
        if pi > 0.0 {
            cum += pi;
            last = i;
            if u < cum {
                return i;
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let logits = [0.0, 2.0, 2.0, -1.0, 5.0, 1.0, 5.0, 0.0];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (t, p) = sample_rows(&logits, 4, &Sampling::greedy(), 0.0, &mut rng);
        assert_eq!(t, vec![1, 0]);
        assert_eq!(p, vec![1.0, 1.0]);
    }

    #[test]
    fn top_k_keeps_ties_at_the_kth_value() {
        let mut row = [1.0, 3.0, 2.0, 2.0, 0.5];
        filter_top_k(&mut row, TopK::Count(2));
        assert_eq!(row, [f32::NEG_INFINITY, 3.0, 2.0, 2.0, f32::NEG_INFINITY]);
        let mut row = [1.0, 3.0, 2.0, 0.0];
        filter_top_k(&mut row, TopK::Fraction(0.25));
        assert_eq!(row[1], 3.0);
        assert_eq!(row.iter().filter(|v| v.is_finite()).count(), 1);
    }

    #[test]
    fn top_p_keeps_the_first_token_above_the_threshold() {
        // probabilities ≈ [0.6652, 0.2447, 0.0900] for logits [2, 1, 0]
        let mut row = [1.0, 2.0, 0.0];
        filter_top_p(&mut row, 0.5);
        assert_eq!(row, [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY]);
        let mut row = [1.0, 2.0, 0.0];
        filter_top_p(&mut row, 0.7);
        assert_eq!(row, [1.0, 2.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn sampling_is_seeded_and_respects_filters() {
        let logits: Vec<f32> = (0..64).map(|i| (i % 8) as f32 * 0.3).collect();
        let s = Sampling {
            temperature: 1.0,
            top_k: TopK::Count(2),
            top_p: 0.0,
        };
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            sample_rows(&logits, 8, &s, 1.0, &mut rng)
        };
        let (a, pa) = run(3);
        assert_eq!((a.clone(), pa.clone()), run(3));
        assert!(a.iter().all(|&t| t == 6 || t == 7), "{a:?}");
        for (t, p) in a.iter().zip(&pa) {
            // two kept logits 1.8 and 2.1: p(7) = 1 / (1 + e^-0.3)
            let p7 = 1.0 / (1.0 + (-0.3f64).exp());
            let want = if *t == 7 { p7 } else { 1.0 - p7 };
            assert!((p - want).abs() < 1e-6);
        }
        let many: Vec<i64> = (0..200).flat_map(|seed| run(seed).0).collect();
        assert!(many.contains(&6) && many.contains(&7));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(Sampling::with_temperature(-1.0).validate("x").is_err());
        let s = Sampling {
            top_p: 1.5,
            ..Sampling::greedy()
        };
        assert!(s.validate("x").is_err());
        let s = Sampling {
            top_k: TopK::Fraction(0.0),
            ..Sampling::greedy()
        };
        assert!(s.validate("x").is_err());
        assert!(Sampling::with_temperature(1.0).validate("x").is_ok());
    }
}
