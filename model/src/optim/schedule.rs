//! ml-4m's learning-rate schedule (`fourm/utils/scheduler.py::cosine_scheduler`), indexed by
//! micro-step.

use serde::{Deserialize, Serialize};

/// `lr = blr · total_batch / 256` (run_training_4m.py).
pub fn scaled_lr(base_lr: f64, total_batch: usize) -> f64 {
    base_lr * total_batch as f64 / 256.0
}

/// Linear warm-up from 0 (`np.linspace(0, lr, warmup)`, so step 0 has lr 0 and step
/// `warmup - 1` the full lr), then a cosine from `lr` to `min_lr` over the remaining steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Total steps (warm-up included).
    pub total_steps: u64,
}

impl CosineSchedule {
    /// The learning rate at micro-step `step` (the last value after `total_steps`).
    pub fn lr(&self, step: u64) -> f64 {
        let step = step.min(self.total_steps.saturating_sub(1));
        let w = self.warmup_steps.min(self.total_steps);
        if step < w {
            if w == 1 {
                return 0.0;
            }
            // numpy: arange(w) * ((stop - start) / (w - 1)) + start, with the endpoint exact.
            return if step == w - 1 {
                self.lr
            } else {
                step as f64 * (self.lr / (w - 1) as f64)
            };
        }
        let t = (self.total_steps - w) as f64;
        let i = (step - w) as f64;
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * i / t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_starts_at_zero_and_cosine_ends_near_min() {
        let s = CosineSchedule {
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 5,
            total_steps: 105,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(2) - 5e-4).abs() < 1e-15);
        assert_eq!(s.lr(4), 1e-3);
        assert_eq!(s.lr(5), 1e-3);
        assert!(s.lr(55) < 1e-3 && s.lr(55) > 1e-5);
        let last = s.lr(104);
        assert!(last > 1e-5 && last < 1.1e-5, "{last}");
        assert_eq!(s.lr(10_000), last);
        assert_eq!(scaled_lr(1e-4, 8192), 3.2e-3);
    }
}
