//! Decoding schedules of ml-4m (`fourm/utils/generation.py`): how many tokens each MaskGIT or
//! ROAR step commits, the temperature of each step, and the guidance scale of each step.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Tokens committed per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSchedule {
    /// `s_i = ½(1 + cos(π i / n))`, step `i` commits `round(T (s_i − s_{i+1}))` (ties to even, as
    /// numpy rounds) and the last step the remainder: few tokens first, most in the middle.
    Cosine,
    /// Differences of `linspace(0, T, n + 1)` truncated to integers, largest first, trailing
    /// zero steps dropped.
    Linear,
}

impl TokenSchedule {
    /// Tokens per step for `steps` steps decoding `total` tokens; sums to `total`.
    pub fn tokens(self, steps: usize, total: usize) -> Result<Vec<usize>, ModelError> {
        if steps == 0 {
            return Err(ModelError::generation(
                "*",
                "a schedule needs at least one step",
            ));
        }
        Ok(match self {
            TokenSchedule::Cosine => cosine_tokens(steps, total),
            TokenSchedule::Linear => linear_tokens(steps, total),
        })
    }
}

/// Temperature per step, from a starting temperature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum TemperatureSchedule {
    /// The same temperature at every step.
    Constant,
    /// `t` at the first step, then `t · (T − committed) / T` (committed = tokens decoded by the
    /// previous steps), at least `1e-9` (ml-4m `linear_temp_schedule`).
    Linear,
    /// ml-4m's `onex:{min_t}:{power}`: `min_t + (t − min_t) · (1 − c_i/T) · y_i`, where `y` is
    /// `x^-power` on `linspace(1, 100, T)` rescaled to `[0, 1]` and `c_i` the tokens committed
    /// up to and including step `i`. As in ml-4m only the first `steps` values of `y` are used.
    OneX {
        /// Temperature the schedule decays to.
        min_t: f64,
        /// Exponent of the `1/x` curve.
        power: f64,
    },
}

impl TemperatureSchedule {
    /// Temperatures of the steps of `token_schedule`, starting from `temperature`.
    pub fn temperatures(self, temperature: f64, token_schedule: &[usize]) -> Vec<f64> {
        let total: usize = token_schedule.iter().sum();
        match self {
            TemperatureSchedule::Constant => vec![temperature; token_schedule.len()],
            TemperatureSchedule::Linear => {
                let mut out = Vec::with_capacity(token_schedule.len());
                out.push(temperature.max(1e-9));
                let mut committed = 0;
                for &n in &token_schedule[..token_schedule.len().saturating_sub(1)] {
                    committed += n;
                    let t = temperature * (total - committed) as f64 / total as f64;
                    out.push(t.max(1e-9));
                }
                out
            }
            TemperatureSchedule::OneX { min_t, power } => {
                let y = onex_curve(total, power);
                let mut committed = 0;
                token_schedule
                    .iter()
                    .zip(y)
                    .map(|(&n, y)| {
                        committed += n;
                        let s = (1.0 - committed as f64 / total as f64) * y;
                        (min_t + (temperature - min_t) * s).max(1e-9)
                    })
                    .collect()
            }
        }
    }
}

/// Classifier-free guidance scale per step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum GuidanceSchedule {
    /// The same scale at every step (ml-4m's only implemented schedule).
    Constant,
    /// From the starting scale at the first step linearly to `end` at the last (a fourm
    /// addition; ml-4m names a `cosine` schedule but does not implement it).
    Linear {
        /// Scale at the last step.
        end: f64,
    },
}

impl GuidanceSchedule {
    /// Scales of `steps` steps starting from `scale`.
    pub fn scales(self, scale: f64, steps: usize) -> Vec<f64> {
        match self {
            GuidanceSchedule::Constant => vec![scale; steps],
            GuidanceSchedule::Linear { end } => (0..steps)
                .map(|i| {
                    let f = if steps > 1 {
                        i as f64 / (steps - 1) as f64
                    } else {
                        0.0
                    };
                    scale + (end - scale) * f
                })
                .collect(),
        }
    }
}

fn cosine_tokens(steps: usize, total: usize) -> Vec<usize> {
    let s: Vec<f64> = (0..steps)
        .map(|i| 0.5 * (1.0 + (std::f64::consts::PI * i as f64 / steps as f64).cos()))
        .collect();
    let mut out: Vec<usize> = s
        .windows(2)
        .map(|w| (total as f64 * (w[0] - w[1])).round_ties_even() as usize)
        .collect();
    // For small totals the rounded steps can add up to more than `total` (ml-4m's last step then
    // goes negative and decoding fails): take the excess back from the latest steps instead.
    let mut used: usize = out.iter().sum();
    for n in out.iter_mut().rev() {
        let take = (*n).min(used.saturating_sub(total));
        *n -= take;
        used -= take;
    }
    out.push(total - used);
    out
}

fn linear_tokens(steps: usize, total: usize) -> Vec<usize> {
    // numpy: linspace(0, T, n + 1) = i · (T / n) with the last point exactly T, cast to int.
    let step = total as f64 / steps as f64;
    let points: Vec<usize> = (0..=steps)
        .map(|i| {
            if i == steps {
                total
            } else {
                (i as f64 * step) as usize
            }
        })
        .collect();
    let mut out: Vec<usize> = points.windows(2).map(|w| w[1] - w[0]).collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    while out.last() == Some(&0) {
        out.pop();
    }
    out
}

/// `1/x^power` on `linspace(1, 100, n)`, shifted and scaled to `[0, 1]`.
fn onex_curve(n: usize, power: f64) -> Vec<f64> {
    if n < 2 {
        // numpy divides 0 by 0 here; a single token decodes at the starting temperature.
        return vec![1.0; n];
    }
    let step = 99.0 / (n - 1) as f64;
    let y: Vec<f64> = (0..n)
        .map(|i| {
            let x = if i == n - 1 {
                100.0
            } else {
                1.0 + i as f64 * step
            };
            1.0 / x.powf(power)
        })
        .collect();
    let min = y.iter().copied().fold(f64::INFINITY, f64::min);
    let shifted: Vec<f64> = y.iter().map(|v| v - min).collect();
    let max = shifted.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    shifted.into_iter().map(|v| v / max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_never_commits_more_than_the_total() {
        // ml-4m rounds these to [1, 2, 3, 3, 3, 3, 2] and a last step of -1.
        assert_eq!(
            TokenSchedule::Cosine.tokens(8, 16).unwrap(),
            vec![1, 2, 3, 3, 3, 3, 1, 0]
        );
        for total in 1..64 {
            for steps in 1..20 {
                let t = TokenSchedule::Cosine.tokens(steps, total).unwrap();
                assert_eq!(
                    t.iter().sum::<usize>(),
                    total,
                    "{steps} steps, {total} tokens"
                );
            }
        }
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    // Expected values computed with ml-4m's numpy formulas.
    #[test]
    fn cosine_matches_ml4m() {
        let c = TokenSchedule::Cosine;
        assert_eq!(c.tokens(8, 64).unwrap(), vec![2, 7, 10, 12, 12, 10, 7, 4]);
        assert_eq!(
            c.tokens(25, 196).unwrap(),
            vec![
                1, 2, 4, 5, 7, 8, 9, 10, 11, 11, 12, 12, 12, 12, 12, 11, 11, 10, 9, 8, 7, 5, 4, 2,
                1
            ]
        );
        assert_eq!(c.tokens(3, 2).unwrap(), vec![0, 1, 1]);
        assert!(c.tokens(0, 4).is_err());
    }

    #[test]
    fn linear_matches_ml4m() {
        let l = TokenSchedule::Linear;
        let mut expected = vec![8; 21];
        expected.extend([7; 4]);
        assert_eq!(l.tokens(25, 196).unwrap(), expected);
        assert_eq!(l.tokens(49, 196).unwrap(), vec![4; 49]);
        assert_eq!(l.tokens(8, 5).unwrap(), vec![1; 5]);
        assert_eq!(l.tokens(3, 10).unwrap(), vec![4, 3, 3]);
    }

    #[test]
    fn temperature_schedules_match_ml4m() {
        let tokens = TokenSchedule::Cosine.tokens(25, 196).unwrap();
        let lin = TemperatureSchedule::Linear.temperatures(5.0, &tokens);
        assert_eq!(lin.len(), 25);
        close(
            &lin[..4],
            &[5.0, 4.974489795918367, 4.923469387755102, 4.821428571428571],
        );
        close(&lin[24..], &[0.025510204081632654]);

        let tokens = TokenSchedule::Linear.tokens(49, 196).unwrap();
        let onex = TemperatureSchedule::OneX {
            min_t: 0.5,
            power: 0.5,
        }
        .temperatures(6.0, &tokens);
        assert_eq!(onex.len(), 49);
        close(
            &onex[..3],
            &[5.887755102040816, 4.687647349985863, 3.967435163345665],
        );
        close(&onex[48..], &[0.5]);

        let constant = TemperatureSchedule::Constant.temperatures(0.7, &tokens);
        assert_eq!(constant, vec![0.7; 49]);
    }

    #[test]
    fn guidance_schedules() {
        assert_eq!(GuidanceSchedule::Constant.scales(3.0, 3), vec![3.0; 3]);
        assert_eq!(
            GuidanceSchedule::Linear { end: 1.0 }.scales(3.0, 5),
            vec![3.0, 2.5, 2.0, 1.5, 1.0]
        );
        assert_eq!(
            GuidanceSchedule::Linear { end: 1.0 }.scales(3.0, 1),
            vec![3.0]
        );
    }
}
