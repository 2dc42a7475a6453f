//! Scores of a prediction against ground truth, as sums that add across samples and ranks (so
//! that ranks evaluating shards of a set can combine them with one all-reduce): token accuracy,
//! segmentation (per-class intersections and unions), depth (absolute relative error, δ < 1.25),
//! surface normals (angular error), captions ([`caption`]) and boxes ([`detection`]).

pub mod caption;
pub mod detection;

use serde::{Deserialize, Serialize};

/// Hits and total, for an accuracy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Correct.
    pub hits: f64,
    /// Counted.
    pub total: f64,
}

impl Ratio {
    /// `hits / total` (0 of nothing).
    pub fn value(&self) -> f64 {
        if self.total > 0.0 {
            self.hits / self.total
        } else {
            0.0
        }
    }

    /// Adds `other`.
    pub fn add(&mut self, other: Ratio) {
        self.hits += other.hits;
        self.total += other.total;
    }
}

/// Token accuracy: positions where the predicted id equals the true one.
pub fn token_accuracy(pred: &[i64], truth: &[i64]) -> Ratio {
    Ratio {
        hits: pred.iter().zip(truth).filter(|(p, t)| p == t).count() as f64,
        total: truth.len() as f64,
    }
}

/// Segmentation sums: per class, pixels of the intersection and of the union, and correct
/// pixels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segmentation {
    /// `intersection[c]`.
    pub intersection: Vec<f64>,
    /// `union[c]`.
    pub union: Vec<f64>,
    /// Correct pixels over all pixels.
    pub pixels: Ratio,
}

impl Segmentation {
    /// Sums of one predicted class map against the true one (`classes` classes).
    pub fn of(pred: &[u8], truth: &[u8], classes: usize) -> Self {
        let mut s = Self {
            intersection: vec![0.0; classes],
            union: vec![0.0; classes],
            pixels: Ratio::default(),
        };
        for (&p, &t) in pred.iter().zip(truth) {
            let (p, t) = (
                usize::from(p).min(classes - 1),
                usize::from(t).min(classes - 1),
            );
            if p == t {
                s.intersection[p] += 1.0;
                s.union[p] += 1.0;
                s.pixels.hits += 1.0;
            } else {
                s.union[p] += 1.0;
                s.union[t] += 1.0;
            }
            s.pixels.total += 1.0;
        }
        s
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &Segmentation) {
        if self.union.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.intersection.iter_mut().zip(&other.intersection) {
            *a += b;
        }
        for (a, b) in self.union.iter_mut().zip(&other.union) {
            *a += b;
        }
        self.pixels.add(other.pixels);
    }

    /// Mean IoU over the classes present in the prediction or the truth.
    pub fn miou(&self) -> f64 {
        let ious: Vec<f64> = self
            .intersection
            .iter()
            .zip(&self.union)
            .filter(|(_, u)| **u > 0.0)
            .map(|(i, u)| i / u)
            .collect();
        if ious.is_empty() {
            0.0
        } else {
            ious.iter().sum::<f64>() / ious.len() as f64
        }
    }
}

/// Depth sums over the pixels with a true depth below `far` (the sky has none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Depth {
    /// Sum of `|pred - truth| / truth`.
    pub abs_rel: f64,
    /// Pixels with `max(pred/truth, truth/pred) < 1.25`.
    pub delta1: Ratio,
}

impl Depth {
    /// Sums of one predicted depth map against the true one.
    pub fn of(pred: &[f32], truth: &[f32], far: f32) -> Self {
        let mut s = Self::default();
        for (&p, &t) in pred.iter().zip(truth) {
            if !(t > 0.0 && t < far) {
                continue;
            }
            let p = p.max(1e-3);
            s.abs_rel += f64::from((p - t).abs() / t);
            let ratio = (p / t).max(t / p);
            s.delta1.hits += f64::from(u8::from(ratio < 1.25));
            s.delta1.total += 1.0;
        }
        s
    }

    /// Adds `other`.
    pub fn add(&mut self, other: Depth) {
        self.abs_rel += other.abs_rel;
        self.delta1.add(other.delta1);
    }

    /// Mean absolute relative error.
    pub fn abs_rel(&self) -> f64 {
        if self.delta1.total > 0.0 {
            self.abs_rel / self.delta1.total
        } else {
            0.0
        }
    }
}

/// Surface-normal sums: angular error in degrees over the pixels with a surface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Normals {
    /// Sum of the angles (degrees).
    pub degrees: f64,
    /// Pixels counted.
    pub pixels: f64,
}

impl Normals {
    /// Sums of one predicted normal map (3 values a pixel) against the true one; pixels whose
    /// true normal is zero (no surface) are skipped.
    pub fn of(pred: &[f32], truth: &[f32]) -> Self {
        let mut s = Self::default();
        for (p, t) in pred.chunks_exact(3).zip(truth.chunks_exact(3)) {
            let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let (np, nt) = (norm(p), norm(t));
            if nt < 1e-6 {
                continue;
            }
            let cos = if np < 1e-6 {
                0.0
            } else {
                p.iter()
                    .zip(t)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
                    / (np * nt)
            };
            s.degrees += cos.clamp(-1.0, 1.0).acos().to_degrees();
            s.pixels += 1.0;
        }
        s
    }

    /// Adds `other`.
    pub fn add(&mut self, other: Normals) {
        self.degrees += other.degrees;
        self.pixels += other.pixels;
    }

    /// Mean angular error in degrees.
    pub fn mean(&self) -> f64 {
        if self.pixels > 0.0 {
            self.degrees / self.pixels
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_prediction_scores_perfectly() {
        let classes = [0u8, 1, 1, 2, 3, 1];
        let s = Segmentation::of(&classes, &classes, 5);
        assert_eq!(s.miou(), 1.0);
        assert_eq!(s.pixels.value(), 1.0);
        let depth = [2.0f32, 5.0, 30.0, 7.5];
        let d = Depth::of(&depth, &depth, 30.0);
        assert_eq!(d.abs_rel(), 0.0);
        assert_eq!(d.delta1.value(), 1.0);
        let normals = [0.0f32, 1.0, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 0.0];
        let n = Normals::of(&normals, &normals);
        assert!(n.mean() < 1e-3, "{}", n.mean());
        assert_eq!(n.pixels, 2.0, "the pixel without a surface is skipped");
        assert_eq!(token_accuracy(&[1, 2, 3], &[1, 2, 3]).value(), 1.0);
    }

    #[test]
    fn known_imperfect_predictions() {
        // All "ground" against half ground, half background: IoU(ground) = 1/2, IoU(bg) = 0.
        let s = Segmentation::of(&[1, 1, 1, 1], &[0, 0, 1, 1], 5);
        assert!((s.miou() - 0.25).abs() < 1e-12);
        assert_eq!(s.pixels.value(), 0.5);
        // Depth 4 against 2: abs-rel 1, ratio 2 (not within 1.25).
        let d = Depth::of(&[4.0, 2.0], &[2.0, 2.0], 30.0);
        assert!((d.abs_rel() - 0.5).abs() < 1e-12);
        assert_eq!(d.delta1.value(), 0.5);
        // A normal at right angles: 90 degrees.
        let n = Normals::of(&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]);
        assert!((n.mean() - 90.0).abs() < 1e-9);
        assert_eq!(token_accuracy(&[1, 0, 3, 0], &[1, 2, 3, 4]).value(), 0.5);
    }
}
