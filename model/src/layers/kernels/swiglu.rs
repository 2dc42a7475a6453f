//! SwiGLU's gate on host memory: the CPU kernels of [`swiglu`](crate::layers::swiglu), forward
//! `silu(a) · b` and its gradients, elementwise over chunks split across the rayon pool.

use rayon::prelude::*;

use super::exp;

/// Elements handed to one rayon task.
const CHUNK: usize = 16 * 1024;

/// `σ(a) = 1 / (1 + e^-a)`.
#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

#[inline(always)]
fn forward_body(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a * sigmoid(a) * b;
    }
}

#[inline(always)]
fn backward_body(a: &[f32], b: &[f32], g: &[f32], da: &mut [f32], db: &mut [f32]) {
    for i in 0..a.len() {
        let s = sigmoid(a[i]);
        da[i] = g[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
        db[i] = g[i] * a[i] * s;
    }
}

vectorised!(
    /// One chunk of [`forward`].
    forward_chunk(a: &[f32], b: &[f32], out: &mut [f32]) => forward_body
);

vectorised!(
    /// One chunk of [`backward`].
    backward_chunk(a: &[f32], b: &[f32], g: &[f32], da: &mut [f32], db: &mut [f32]) => backward_body
);

/// `out = a · σ(a) · b`.
pub(crate) fn forward(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(
        a.len() == b.len() && a.len() == out.len(),
        "swiglu: lengths differ"
    );
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| forward_chunk(a, b, o));
}

/// Gradients of `silu(a) · b` under the output gradient `g`:
/// `da = g · b · σ(a) · (1 + a · (1 - σ(a)))`, `db = g · a · σ(a)`.
pub(crate) fn backward(a: &[f32], b: &[f32], g: &[f32], da: &mut [f32], db: &mut [f32]) {
    let n = a.len();
    assert!(
        b.len() == n && g.len() == n && da.len() == n && db.len() == n,
        "swiglu backward: lengths differ"
    );
    da.par_chunks_mut(CHUNK)
        .zip(db.par_chunks_mut(CHUNK))
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((da, db), (a, b)), g)| backward_chunk(a, b, g, da, db));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silu(a: f64) -> f64 {
        a / (1.0 + (-a).exp())
    }

    #[test]
    fn forward_and_gradients_match_double_precision() {
        let n = 3 * CHUNK + 5;
        let a: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 4001) as f32 / 100.0 - 20.0)
            .collect();
        let b: Vec<f32> = (0..n)
            .map(|i| ((i * 104_729) % 997) as f32 / 300.0 - 1.5)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 31) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let mut out = vec![0.0; n];
        forward(&a, &b, &mut out);
        let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
        backward(&a, &b, &g, &mut da, &mut db);
        let h = 1e-6;
        for i in 0..n {
            let (x, y, z) = (a[i] as f64, b[i] as f64, g[i] as f64);
            let close =
                |got: f32, want: f64| (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs());
            assert!(close(out[i], silu(x) * y), "forward at {x}");
            let dsilu = (silu(x + h) - silu(x - h)) / (2.0 * h);
            assert!(
                close(da[i], z * y * dsilu),
                "da at {x}: {} vs {}",
                da[i],
                z * y * dsilu
            );
            assert!(close(db[i], z * silu(x)), "db at {x}");
        }
    }

    #[test]
    fn saturates_without_nan() {
        let a = [-1e30f32, -100.0, 100.0, 1e30];
        let b = [1.0f32; 4];
        let mut out = [0.0; 4];
        forward(&a, &b, &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[1], 0.0);
        assert_eq!(out[2], 100.0);
        assert_eq!(out[3], 1e30);
        let (mut da, mut db) = ([0.0; 4], [0.0; 4]);
        backward(&a, &b, &[1.0; 4], &mut da, &mut db);
        assert!(da.iter().chain(&db).all(|v| v.is_finite()));
    }
}
