//! k-means for the patch codebooks: k-means++ seeding, then Lloyd iterations; empty clusters are
//! re-seeded at the worst-served points. Distances use eight-lane sums (they vectorise, and the
//! summation order is fixed, so a fit gives the same codebook on every machine); assignments run
//! in parallel, centroid sums in order, so the result does not depend on the thread count.

use rand::Rng;
use rayon::prelude::*;

use fourm_plan::rng_for;

/// Options of a fit.
pub struct KMeans {
    /// Clusters.
    pub k: usize,
    /// Lloyd iterations.
    pub iterations: usize,
    /// Seed of the k-means++ seeding.
    pub seed: u64,
}

/// `‖c‖²` per code.
pub fn norms(codebook: &[f32], dim: usize) -> Vec<f32> {
    codebook.chunks_exact(dim).map(|c| dot(c, c)).collect()
}

/// Dot product in eight independent lanes (so it vectorises; the summation order is fixed, so
/// results are the same on every machine).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Squared Euclidean distance, eight lanes.
pub fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Nearest code of `x` and its squared distance (up to the constant `‖x‖²`).
pub fn nearest(x: &[f32], codebook: &[f32], norms: &[f32], dim: usize) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (k, code) in codebook.chunks_exact(dim).enumerate() {
        let d = norms[k] - 2.0 * dot(x, code);
        if d < best.1 {
            best = (k, d);
        }
    }
    best
}

/// k-means++ seeding, then Lloyd iterations; returns the `[K, dim]` centroids.
pub fn kmeans(points: &[f32], dim: usize, options: &KMeans) -> Vec<f32> {
    let n = points.len() / dim;
    let k = options.k;
    let point = |i: usize| &points[i * dim..(i + 1) * dim];
    let sq = squared_distance;
    let mut rng = rng_for(&[options.seed, 0x6b6d_6561_6e73]);
    // k-means++: each next centre drawn with probability ∝ squared distance to the nearest one.
    let mut centres = Vec::with_capacity(k * dim);
    centres.extend_from_slice(point(rng.random_range(0..n)));
    let mut closest: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| sq(point(i), &centres[..dim]))
        .collect();
    for _ in 1..k {
        let total: f64 = closest.iter().map(|&d| f64::from(d)).sum();
        let next = if total > 0.0 {
            let mut x = rng.random::<f64>() * total;
            closest
                .iter()
                .position(|&d| {
                    x -= f64::from(d);
                    x < 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.random_range(0..n)
        };
        let c = point(next).to_vec();
        closest
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, d)| *d = d.min(sq(point(i), &c)));
        centres.extend_from_slice(&c);
    }
    for _ in 0..options.iterations {
        let cn = norms(&centres, dim);
        let assigned: Vec<(usize, f32)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let x = point(i);
                let (c, d) = nearest(x, &centres, &cn, dim);
                (c, d + dot(x, x))
            })
            .collect();
        let mut sums = vec![0.0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &(c, _)) in assigned.iter().enumerate() {
            counts[c] += 1;
            for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(point(i)) {
                *s += f64::from(v);
            }
        }
        // Empty clusters move to the worst-served points, worst first.
        let mut worst: Vec<usize> = (0..n).collect();
        worst.sort_by(|&a, &b| assigned[b].1.total_cmp(&assigned[a].1).then(a.cmp(&b)));
        let mut worst = worst.into_iter();
        for c in 0..k {
            let target = &mut centres[c * dim..(c + 1) * dim];
            if counts[c] > 0 {
                for (t, s) in target.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                    *t = (s / counts[c] as f64) as f32;
                }
            } else if let Some(p) = worst.next() {
                target.copy_from_slice(point(p));
            }
        }
    }
    centres
}
