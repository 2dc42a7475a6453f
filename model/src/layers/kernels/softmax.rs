//! Row softmax on host memory: the CPU kernel of [`softmax_last`](crate::layers::softmax_last).
//! Rows are independent and split over the rayon pool; before this kernel the exponentials of
//! attention's softmax were ~40 % of a generation step.

use rayon::prelude::*;

use super::exp;

vectorised!(
    /// [`rows`] for the widest instruction set available.
    rows_vectorised(input: &[f32], out: &mut [f32], row_len: usize) => rows
);

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 32;
/// Independent accumulators per reduction (one AVX-512 register of `f32`).
const LANES: usize = 16;

/// `out[r] = softmax(input[r])` for every row of `row_len` elements.
///
/// A row whose values are all `-inf` gives NaN, as `exp(x - max)` does in PyTorch.
pub(crate) fn softmax_rows(input: &[f32], out: &mut [f32], row_len: usize) {
    assert_eq!(
        input.len(),
        out.len(),
        "softmax: input and output lengths differ"
    );
    if row_len == 0 {
        return;
    }
    assert_eq!(
        input.len() % row_len,
        0,
        "softmax: length is not a multiple of the row"
    );
    let chunk = ROWS_PER_TASK * row_len;
    out.par_chunks_mut(chunk)
        .zip(input.par_chunks(chunk))
        .for_each(|(o, i)| rows_vectorised(i, o, row_len));
}

#[inline(always)]
fn rows(input: &[f32], out: &mut [f32], row_len: usize) {
    for (x, y) in input
        .chunks_exact(row_len)
        .zip(out.chunks_exact_mut(row_len))
    {
        row(x, y);
    }
}

/// One row: max, `exp(x - max)` with its sum, then scale by `1 / sum`.
#[inline(always)]
fn row(x: &[f32], y: &mut [f32]) {
    let max = row_max(x);
    let mut acc = [0.0f32; LANES];
    let mut xs = x.chunks_exact(LANES);
    let mut ys = y.chunks_exact_mut(LANES);
    for (xc, yc) in (&mut xs).zip(&mut ys) {
        for l in 0..LANES {
            let e = exp(xc[l] - max);
            yc[l] = e;
            acc[l] += e;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (xv, yv) in xs.remainder().iter().zip(ys.into_remainder()) {
        let e = exp(xv - max);
        *yv = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for v in y.iter_mut() {
        *v *= inv;
    }
}

#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let tail = chunks.remainder().iter();
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32]) -> Vec<f32> {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| (v / s) as f32).collect()
    }

    #[test]
    fn rows_match_a_double_precision_softmax() {
        // Row lengths around the lane count, rows over several tasks, a masked column.
        for row_len in [1, 7, 16, 17, 33, 256] {
            let rows = 70;
            let input: Vec<f32> = (0..rows * row_len)
                .map(|i| {
                    if i % row_len == 3 {
                        -f32::MAX
                    } else {
                        ((i * 7919) % 1000) as f32 / 37.0 - 13.0
                    }
                })
                .collect();
            let mut out = vec![0.0; input.len()];
            softmax_rows(&input, &mut out, row_len);
            for (x, y) in input.chunks(row_len).zip(out.chunks(row_len)) {
                for (a, b) in y.iter().zip(reference(x)) {
                    assert!((a - b).abs() <= 1e-6 * b.max(1e-30) + 1e-12, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_fully_masked_row_is_uniform() {
        let input = vec![-f32::MAX; 20];
        let mut out = vec![0.0; 20];
        softmax_rows(&input, &mut out, 20);
        assert!(out.iter().all(|&v| (v - 0.05).abs() < 1e-7));
    }
}
