//! Orthonormalisation of a tall `n x r` panel: CholeskyQR2, with modified Gram-Schmidt
//! as the fallback when the Gram matrix is (numerically) singular.

use super::{check_rank, matmul_xtp};
use crate::KernelError;

/// What [`orthonormalize`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orthonormalized {
    /// Columns that are now orthonormal; the others (numerically dependent on earlier
    /// ones, or zero) were set to zero.
    pub rank: usize,
    /// Whether the Gram-Schmidt fallback ran (CholeskyQR2 broke down).
    pub fallback: bool,
}

/// Makes the columns of `p` (n x r, row-major, `r <= 64`) orthonormal, spanning the
/// same space as before (in order: column j is in the span of columns 0..=j).
///
/// CholeskyQR2: `G = P^T P = R^T R`, `P <- P R^-1`, twice. This is stable when the
/// panel's condition number is below about 1e3 (f32); when a Cholesky pivot is not
/// clearly positive, the panel is redone by modified Gram-Schmidt with
/// re-orthogonalisation, which zeroes columns whose remaining norm is below `1e-5` of
/// their original norm (the rank then counts the others). NaN or infinite entries leave
/// NaN in the panel; callers check their input first.
pub fn orthonormalize(p: &mut [f32], n: usize, r: usize) -> Result<Orthonormalized, KernelError> {
    check_rank(r)?;
    KernelError::check_len("p", p.len(), n * r)?;
    if r == 0 {
        return Ok(Orthonormalized {
            rank: 0,
            fallback: false,
        });
    }
    let backup = p.to_vec();
    if cholesky_qr(p, n, r) && cholesky_qr(p, n, r) {
        return Ok(Orthonormalized {
            rank: r,
            fallback: false,
        });
    }
    p.copy_from_slice(&backup);
    let rank = gram_schmidt(p, n, r);
    Ok(Orthonormalized {
        rank,
        fallback: true,
    })
}

/// One CholeskyQR pass; false if the Cholesky factorisation broke down.
fn cholesky_qr(p: &mut [f32], n: usize, r: usize) -> bool {
    let mut gram = vec![0.0f32; r * r];
    if matmul_xtp(p, n, r, p, r, &mut gram).is_err() {
        return false;
    }
    // Cholesky in f64: G = R^T R with R upper triangular.
    let mut rr = vec![0.0f64; r * r];
    let scale = (0..r)
        .map(|j| f64::from(gram[j * r + j]))
        .fold(0.0, f64::max);
    // (Written so that NaN also fails.)
    if !(scale > 0.0 && scale.is_finite()) {
        return false;
    }
    for j in 0..r {
        let mut diag = f64::from(gram[j * r + j]);
        for k in 0..j {
            diag -= rr[k * r + j] * rr[k * r + j];
        }
        // A pivot this small means the panel is rank-deficient at f32 precision.
        if diag.is_nan() || diag <= scale * 1e-10 {
            return false;
        }
        let pivot = diag.sqrt();
        rr[j * r + j] = pivot;
        for i in j + 1..r {
            let mut v = f64::from(gram[j * r + i]);
            for k in 0..j {
                v -= rr[k * r + j] * rr[k * r + i];
            }
            rr[j * r + i] = v / pivot;
        }
    }
    // R^-1 (upper triangular), then P <- P R^-1 with the GEMM kernel.
    let mut inv = vec![0.0f64; r * r];
    for j in 0..r {
        inv[j * r + j] = 1.0 / rr[j * r + j];
        for i in (0..j).rev() {
            let mut v = 0.0;
            for k in i + 1..=j {
                v += rr[i * r + k] * inv[k * r + j];
            }
            inv[i * r + j] = -v / rr[i * r + i];
        }
    }
    let inv32: Vec<f32> = inv.iter().map(|&v| v as f32).collect();
    let input = p.to_vec();
    super::matmul_any_width(&input, n, r, &inv32, r, p);
    p.iter().all(|v| v.is_finite())
}

/// Modified Gram-Schmidt with one re-orthogonalisation pass, in f64 over the strided
/// columns (the fallback path only); returns the rank.
fn gram_schmidt(p: &mut [f32], n: usize, r: usize) -> usize {
    let mut rank = 0;
    for j in 0..r {
        let original = column_norm(p, n, r, j);
        for _pass in 0..2 {
            for k in 0..j {
                let dot: f64 = (0..n)
                    .map(|i| f64::from(p[i * r + k]) * f64::from(p[i * r + j]))
                    .sum();
                for i in 0..n {
                    p[i * r + j] -= (dot as f32) * p[i * r + k];
                }
            }
        }
        let norm = column_norm(p, n, r, j);
        if norm > 1e-5 * original && norm > 0.0 && norm.is_finite() {
            for i in 0..n {
                p[i * r + j] = (f64::from(p[i * r + j]) / norm) as f32;
            }
            rank += 1;
        } else {
            for i in 0..n {
                p[i * r + j] = 0.0;
            }
        }
    }
    rank
}

fn column_norm(p: &[f32], n: usize, r: usize, j: usize) -> f64 {
    (0..n)
        .map(|i| f64::from(p[i * r + j]).powi(2))
        .sum::<f64>()
        .sqrt()
}
