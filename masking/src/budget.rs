//! Token budgets: how many input and target tokens each modality of a sample gets
//! (ml-4m `UnifiedMasking.input_token_budget` / `target_token_budget`, 4m-spec.md §2.1).
//!
//! A budget of `n` tokens is split by a Dirichlet draw `p`: `b = ⌊p·n⌋`, and the `n − Σb` tokens
//! left over go one by one to the argmax of fresh Dirichlet draws (so a modality whose alpha is
//! ~0 gets none). Budgets are then clamped to each modality's capacity, and the draw is retried
//! (at most `max_tries` times) while a modality is under its `min_tokens`.
//!
//! Dirichlet draws are made in log space (`log Γ(α+1) + log(U)/α` for α < 1), so alphas from 0.01
//! to 1000 are all exact. A modality with alpha exactly 0 gets probability exactly 0 (ml-4m clamps
//! alpha to 1e-9, which gives the same result except with probability ~1e-9). A component whose
//! alphas are all 0 gives every modality a budget of 0.

use rand::{Rng, RngCore};
use rand_distr::{Distribution, Gamma};

/// The Dirichlet distribution of one side (inputs or targets) of one mixture component.
#[derive(Debug, Clone)]
pub struct Dirichlet {
    /// Gamma distributions of the positive alphas (α, or α + 1 when α < 1), by modality.
    gammas: Vec<Option<(Gamma<f64>, f64)>>,
}

impl Dirichlet {
    /// A Dirichlet over `alphas` (each ≥ 0, finite: checked by the alphas config).
    pub fn new(alphas: &[f64]) -> Self {
        let gammas = alphas
            .iter()
            .map(|&a| {
                if a > 0.0 && a.is_finite() {
                    let shape = if a < 1.0 { a + 1.0 } else { a };
                    Gamma::new(shape, 1.0).ok().map(|g| (g, a))
                } else {
                    None
                }
            })
            .collect();
        Self { gammas }
    }

    /// One draw: probabilities summing to 1 (all 0 when every alpha is 0).
    pub fn sample<R: RngCore>(&self, rng: &mut R) -> Vec<f64> {
        let logs: Vec<Option<f64>> = self
            .gammas
            .iter()
            .map(|g| {
                g.as_ref().map(|(gamma, alpha)| {
                    let x: f64 = gamma.sample(rng).max(f64::MIN_POSITIVE);
                    if *alpha < 1.0 {
                        // Γ(α) = Γ(α+1)·U^(1/α), U in (0, 1].
                        let u = 1.0 - rng.random::<f64>();
                        x.ln() + u.ln() / alpha
                    } else {
                        x.ln()
                    }
                })
            })
            .collect();
        let max = logs
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return vec![0.0; logs.len()];
        }
        let weights: Vec<f64> = logs
            .iter()
            .map(|l| l.map_or(0.0, |l| (l - max).exp()))
            .collect();
        let sum: f64 = weights.iter().sum();
        weights.iter().map(|w| w / sum).collect()
    }

    /// Whether every alpha is 0.
    pub fn is_degenerate(&self) -> bool {
        self.gammas.iter().all(Option::is_none)
    }
}

/// Splits `total` tokens over the modalities: `⌊p·total⌋`, the remainder by argmax of fresh
/// draws, then clamped to `caps`; redrawn while a budget is below `mins` (at most `max_tries`).
/// Returns the budgets and whether `mins` are met.
pub fn split_budget<R: RngCore>(
    dirichlet: &Dirichlet,
    total: usize,
    caps: &[usize],
    mins: &[usize],
    max_tries: u32,
    rng: &mut R,
) -> (Vec<usize>, bool) {
    let n = caps.len();
    let mut budget = vec![0; n];
    if dirichlet.is_degenerate() {
        return (budget, mins.iter().all(|&m| m == 0));
    }
    for _ in 0..max_tries.max(1) {
        let p = dirichlet.sample(rng);
        budget = p.iter().map(|&p| (p * total as f64) as usize).collect();
        let assigned: usize = budget.iter().sum();
        for _ in 0..total.saturating_sub(assigned) {
            budget[argmax(&dirichlet.sample(rng))] += 1;
        }
        for (b, &cap) in budget.iter_mut().zip(caps) {
            *b = (*b).min(cap);
        }
        if budget.iter().zip(mins).all(|(b, m)| b >= m) {
            return (budget, true);
        }
    }
    (budget, false)
}

/// Index of the first maximum (torch's `argmax` picks the first too).
fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use fourm_plan::rng_for;

    #[test]
    fn dirichlet_draws_are_distributions_with_the_right_mean() {
        let d = Dirichlet::new(&[1000.0, 0.0, 0.01, 3.0]);
        let mut rng = rng_for(&[7]);
        let mut mean = [0.0; 4];
        let draws = 4000;
        for _ in 0..draws {
            let p = d.sample(&mut rng);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert_eq!(p[1], 0.0);
            assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0));
            for (m, x) in mean.iter_mut().zip(&p) {
                *m += x / draws as f64;
            }
        }
        let total = 1003.01;
        assert!((mean[0] - 1000.0 / total).abs() < 1e-3, "{mean:?}");
        assert!((mean[3] - 3.0 / total).abs() < 1e-3, "{mean:?}");
        // Symmetric small alphas: each coordinate has mean 1/k.
        let d = Dirichlet::new(&[0.1, 0.1, 0.1]);
        let mut m0 = 0.0;
        for _ in 0..draws {
            m0 += d.sample(&mut rng)[0] / draws as f64;
        }
        assert!((m0 - 1.0 / 3.0).abs() < 0.03, "{m0}");
    }

    #[test]
    fn budgets_sum_to_total_unless_clamped() {
        let d = Dirichlet::new(&[0.5, 0.5, 0.5, 0.0]);
        let mut rng = rng_for(&[3]);
        for total in [0, 1, 7, 128] {
            let (b, ok) = split_budget(&d, total, &[1000; 4], &[0; 4], 100, &mut rng);
            assert!(ok);
            assert_eq!(b.iter().sum::<usize>(), total);
            assert_eq!(b[3], 0);
        }
        let (b, _) = split_budget(&d, 100, &[10, 10, 10, 10], &[0; 4], 100, &mut rng);
        assert!(b.iter().all(|&x| x <= 10));
        let (b, ok) = split_budget(&d, 100, &[100; 4], &[0, 0, 0, 1], 5, &mut rng);
        assert!(
            !ok,
            "a modality with alpha 0 can never reach its minimum: {b:?}"
        );
        let zero = Dirichlet::new(&[0.0, 0.0]);
        assert_eq!(
            split_budget(&zero, 9, &[9, 9], &[0, 0], 3, &mut rng),
            (vec![0, 0], true)
        );
    }
}
