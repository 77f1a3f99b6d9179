//! Randomized truncated SVD (Halko, Martinsson & Tropp 2011) on the tall-skinny
//! kernels: range finding by power iteration, then the exact SVD of the small
//! projected matrix by Jacobi eigendecomposition.

use super::{check_rank, matmul_any_width, matmul_xq, matmul_xtp, orthonormalize};
use crate::KernelError;

/// `A ~ U diag(s) V^T` with `k` terms.
#[derive(Clone, Debug, PartialEq)]
pub struct TruncatedSvd {
    /// Terms kept.
    pub k: usize,
    /// Left singular vectors, `m x k` row-major, orthonormal columns.
    pub u: Vec<f32>,
    /// Singular values, descending, non-negative.
    pub s: Vec<f32>,
    /// Right singular vectors, `n x k` row-major, orthonormal columns (for `s > 0`).
    pub v: Vec<f32>,
}

/// The `k` leading singular triplets of `a` (m x n, row-major), `k <= min(m, n, 64)`,
/// from a random start (`seed`) refined by `power_iters` power iterations.
///
/// Exact (to float rounding) when `a` has rank at most `k`; otherwise each extra power
/// iteration sharpens the estimate. The small `k x k` problem is solved through the
/// eigenvalues of `B B^T`, so singular values below about `3e-4 * s[0]` lose relative
/// accuracy (irrelevant for compression, where they are the dropped ones).
pub fn truncated_svd(
    a: &[f32],
    m: usize,
    n: usize,
    k: usize,
    power_iters: usize,
    seed: u64,
) -> Result<TruncatedSvd, KernelError> {
    check_rank(k)?;
    KernelError::check_len("a", a.len(), m * n)?;
    if k > m.min(n) {
        return Err(KernelError::OutOfRange {
            name: "k",
            value: k.to_string(),
            range: "0..=min(rows, cols)",
        });
    }
    // Range finder: Y = A * Omega, orthonormalised, refined by power iterations.
    let omega = random_start(n * k, seed);
    let mut y = vec![0.0; m * k];
    matmul_xq(a, m, n, &omega, k, &mut y)?;
    orthonormalize(&mut y, m, k)?;
    let mut z = vec![0.0; n * k];
    for _ in 0..power_iters {
        matmul_xtp(a, m, n, &y, k, &mut z)?;
        orthonormalize(&mut z, n, k)?;
        matmul_xq(a, m, n, &z, k, &mut y)?;
        orthonormalize(&mut y, m, k)?;
    }
    // Z = A^T Y (n x k) is B^T for B = Y^T A; B B^T = Z^T Z.
    matmul_xtp(a, m, n, &y, k, &mut z)?;
    let mut gram = vec![0.0f32; k * k];
    matmul_xtp(&z, n, k, &z, k, &mut gram)?;
    let (values, vectors) = jacobi_eigen(&gram, k);
    let s: Vec<f32> = values.iter().map(|&l| l.max(0.0).sqrt() as f32).collect();
    let w: Vec<f32> = vectors.iter().map(|&v| v as f32).collect();
    // U = Y W; V = Z W diag(1/s).
    let mut u = vec![0.0; m * k];
    matmul_any_width(&y, m, k, &w, k, &mut u);
    let mut v = vec![0.0; n * k];
    matmul_any_width(&z, n, k, &w, k, &mut v);
    for row in v.chunks_exact_mut(k.max(1)) {
        for (x, &sj) in row.iter_mut().zip(&s) {
            *x = if sj > 0.0 { *x / sj } else { 0.0 };
        }
    }
    Ok(TruncatedSvd { k, u, s, v })
}

/// Eigen-decomposition of the symmetric `k x k` matrix `g` by cyclic Jacobi in f64:
/// eigenvalues descending, eigenvectors as the columns of a row-major `k x k` matrix.
fn jacobi_eigen(g: &[f32], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
    let mut vecs = vec![0.0f64; k * k];
    for i in 0..k {
        vecs[i * k + i] = 1.0;
    }
    for _sweep in 0..60 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j].powi(2))
            .sum();
        let total: f64 = a.iter().map(|v| v * v).sum();
        if off <= total * 1e-30 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for i in 0..k {
                    let (aip, aiq) = (a[i * k + p], a[i * k + q]);
                    a[i * k + p] = c * aip - s * aiq;
                    a[i * k + q] = s * aip + c * aiq;
                }
                for j in 0..k {
                    let (apj, aqj) = (a[p * k + j], a[q * k + j]);
                    a[p * k + j] = c * apj - s * aqj;
                    a[q * k + j] = s * apj + c * aqj;
                }
                for i in 0..k {
                    let (vip, viq) = (vecs[i * k + p], vecs[i * k + q]);
                    vecs[i * k + p] = c * vip - s * viq;
                    vecs[i * k + q] = s * vip + c * viq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&x, &y| a[y * k + y].total_cmp(&a[x * k + x]));
    let values = order.iter().map(|&j| a[j * k + j]).collect();
    let mut sorted = vec![0.0; k * k];
    for (new, &old) in order.iter().enumerate() {
        for i in 0..k {
            sorted[i * k + new] = vecs[i * k + old];
        }
    }
    (values, sorted)
}

/// Deterministic approximately Gaussian numbers (sum of 4 uniforms, centred, unit
/// variance) from an xorshift generator: a random start for subspace iteration (the range
/// finder here, the first step of the LowRank codec).
pub fn random_start(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| (next() + next() + next() + next() - 2.0) * 1.732)
        .collect()
}
