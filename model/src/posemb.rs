//! Fixed sin-cos position tables (ml-4m `build_1d_sincos_posemb` / `build_2d_sincos_posemb`),
//! computed in `f32` the way torch computes them.

const TEMPERATURE: f32 = 10_000.0;

fn omegas(count: usize) -> Vec<f32> {
    (0..count)
        .map(|k| 1.0 / TEMPERATURE.powf(k as f32 / count as f32))
        .collect()
}

/// `(rows, dim)` table, row `n` = `[sin(n·ω), cos(n·ω)]` with `ω_k = T^(-k/(dim/2))`.
pub fn sincos_1d(rows: usize, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let om = omegas(half);
    let mut out = vec![0.0; rows * dim];
    for (n, row) in out.chunks_exact_mut(dim).enumerate() {
        for (k, &w) in om.iter().enumerate() {
            let a = n as f32 * w;
            row[k] = a.sin();
            row[half + k] = a.cos();
        }
    }
    out
}

/// `(h·w, dim)` table. Row `n` = `[sin(a·ω), cos(a·ω), sin(b·ω), cos(b·ω)]` with `a = n / h`,
/// `b = n % h` (ml-4m's `meshgrid(w, h, indexing='ij')`; for square grids `a` is the row and `b`
/// the column of a row-major token).
pub fn sincos_2d(h: usize, w: usize, dim: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let om = omegas(quarter);
    let mut out = vec![0.0; h * w * dim];
    for (n, row) in out.chunks_exact_mut(dim).enumerate() {
        let (a, b) = ((n / h) as f32, (n % h) as f32);
        for (k, &w) in om.iter().enumerate() {
            row[k] = (a * w).sin();
            row[quarter + k] = (a * w).cos();
            row[2 * quarter + k] = (b * w).sin();
            row[3 * quarter + k] = (b * w).cos();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_rows_are_known_values() {
        let t = sincos_1d(3, 4);
        // n = 0: sin 0 = 0, cos 0 = 1.
        assert_eq!(&t[..4], &[0.0, 0.0, 1.0, 1.0]);
        // n = 1, ω = [1, 1/100].
        assert!((t[4] - 1f32.sin()).abs() < 1e-7);
        assert!((t[5] - 0.01f32.sin()).abs() < 1e-7);
        let g = sincos_2d(2, 2, 8);
        // Token 3 of a 2×2 grid: a = 1, b = 1.
        assert!((g[3 * 8] - 1f32.sin()).abs() < 1e-7);
        assert!((g[3 * 8 + 4] - 1f32.sin()).abs() < 1e-7);
        // Token 1: a = 0, b = 1.
        assert_eq!(g[8], 0.0);
        assert!((g[8 + 4] - 1f32.sin()).abs() < 1e-7);
    }
}
