//! Orthonormal DCT-II and its inverse (DCT-III) over consecutive blocks, by Lee's
//! recursive fast algorithm: `O(B log B)` per block of `B` (a power of two, at most
//! [`MAX_BLOCK`]) instead of the `O(B^2)` matrix product. FedFT sends model updates as
//! the low-frequency coefficients of these blocks.
//!
//! Guarantees: [`dct3_blocks`] inverts [`dct2_blocks`] to float rounding (tests bound the
//! round trip at `1e-5` relative); both preserve the block's Euclidean norm (orthonormal
//! scaling); coefficient 0 of a block is its mean times `sqrt(B)`.

use crate::KernelError;

/// The largest block size.
pub const MAX_BLOCK: usize = 4096;

fn check_block(len: usize, block: usize) -> Result<(), KernelError> {
    if !block.is_power_of_two() || block > MAX_BLOCK {
        return Err(KernelError::OutOfRange {
            name: "block",
            value: block.to_string(),
            range: "a power of two in 1..=4096",
        });
    }
    if !len.is_multiple_of(block) {
        return Err(KernelError::LengthMismatch {
            what: "x (a multiple of the block)",
            found: len,
            expected: len.div_ceil(block) * block,
        });
    }
    Ok(())
}

/// `1 / (2 cos(pi (2i + 1) / (2n)))` for `i < n / 2`, for every level n = B, B/2, .., 2.
fn twiddles(block: usize) -> Vec<Vec<f32>> {
    let mut levels = Vec::new();
    let mut n = block;
    while n >= 2 {
        levels.push(
            (0..n / 2)
                .map(|i| {
                    let angle = std::f64::consts::PI * (2 * i + 1) as f64 / (2 * n) as f64;
                    (0.5 / angle.cos()) as f32
                })
                .collect(),
        );
        n /= 2;
    }
    levels
}

/// The factors that make the unnormalised transform orthonormal: coefficient 0, the rest.
fn orthonormal_scales(block: usize) -> (f32, f32) {
    (
        (1.0 / block as f64).sqrt() as f32,
        (2.0 / block as f64).sqrt() as f32,
    )
}

/// In-place orthonormal DCT-II of every block of `x`.
pub fn dct2_blocks(x: &mut [f32], block: usize) -> Result<(), KernelError> {
    check_block(x.len(), block)?;
    let tw = twiddles(block);
    let mut scratch = vec![0.0; block];
    let (s0, s) = orthonormal_scales(block);
    for b in x.chunks_exact_mut(block) {
        forward(b, &mut scratch, &tw);
        b[0] *= s0;
        for v in &mut b[1..] {
            *v *= s;
        }
    }
    Ok(())
}

/// In-place inverse of [`dct2_blocks`] (orthonormal DCT-III) on every block of `x`.
pub fn dct3_blocks(x: &mut [f32], block: usize) -> Result<(), KernelError> {
    check_block(x.len(), block)?;
    let tw = twiddles(block);
    let mut scratch = vec![0.0; block];
    let (s0, s) = orthonormal_scales(block);
    for b in x.chunks_exact_mut(block) {
        // Undo the orthonormal scaling of the forward transform, then invert it.
        b[0] /= s0;
        for v in &mut b[1..] {
            *v /= s;
        }
        inverse(b, &mut scratch, &tw);
    }
    Ok(())
}

/// Unnormalised DCT-II (`X_k = sum x_n cos(pi (2n+1) k / 2N)`) of `x`, in place.
fn forward(x: &mut [f32], scratch: &mut [f32], tw: &[Vec<f32>]) {
    let n = x.len();
    if n == 1 {
        return;
    }
    let h = n / 2;
    let t = &tw[0];
    let (u, v) = scratch[..n].split_at_mut(h);
    for i in 0..h {
        let (a, b) = (x[i], x[n - 1 - i]);
        u[i] = a + b;
        v[i] = (a - b) * t[i];
    }
    let (xu, xv) = x.split_at_mut(h);
    forward(u, xu, &tw[1..]);
    forward(v, xv, &tw[1..]);
    for k in 0..h {
        x[2 * k] = u[k];
        x[2 * k + 1] = v[k] + if k + 1 < h { v[k + 1] } else { 0.0 };
    }
}

/// Inverse of [`forward`], in place.
fn inverse(x: &mut [f32], scratch: &mut [f32], tw: &[Vec<f32>]) {
    let n = x.len();
    if n == 1 {
        return;
    }
    let h = n / 2;
    let t = &tw[0];
    let (u, v) = scratch[..n].split_at_mut(h);
    // X_{2k} = U_k; X_{2k+1} = V_k + V_{k+1} (V_h = 0), solved from the top down.
    let mut next = 0.0;
    for k in (0..h).rev() {
        u[k] = x[2 * k];
        v[k] = x[2 * k + 1] - next;
        next = v[k];
    }
    let (xu, xv) = x.split_at_mut(h);
    inverse(u, xu, &tw[1..]);
    inverse(v, xv, &tw[1..]);
    for i in 0..h {
        let d = v[i] / t[i];
        x[i] = 0.5 * (u[i] + d);
        x[n - 1 - i] = 0.5 * (u[i] - d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dct2(x: &[f32]) -> Vec<f64> {
        let n = x.len();
        (0..n)
            .map(|k| {
                let s: f64 = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        f64::from(v)
                            * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64
                                / (2 * n) as f64)
                                .cos()
                    })
                    .sum();
                s * if k == 0 {
                    (1.0 / n as f64).sqrt()
                } else {
                    (2.0 / n as f64).sqrt()
                }
            })
            .collect()
    }

    #[test]
    fn matches_the_definition_and_inverts() {
        for block in [1, 2, 4, 8, 64, 256] {
            let x: Vec<f32> = (0..3 * block)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let mut y = x.clone();
            dct2_blocks(&mut y, block).unwrap();
            for (b, yb) in x.chunks(block).zip(y.chunks(block)) {
                let want = naive_dct2(b);
                let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt();
                for (got, w) in yb.iter().zip(&want) {
                    assert!(
                        (f64::from(*got) - w).abs() < 1e-5 * norm.max(1.0),
                        "block {block}: {got} vs {w}"
                    );
                }
            }
            dct3_blocks(&mut y, block).unwrap();
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-4, "block {block}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_blocks_are_errors() {
        assert!(dct2_blocks(&mut [0.0; 6], 3).is_err());
        assert!(dct2_blocks(&mut [0.0; 6], 4).is_err());
        assert!(dct3_blocks(&mut [0.0; 8192], 8192).is_err());
        assert!(dct2_blocks(&mut [], 4).is_ok());
    }
}
