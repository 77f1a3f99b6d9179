//! Tall-skinny linear algebra for low-rank compression: `X * Q` and `X^T * P` for
//! `r <= 64` columns, orthonormalisation of an `n x r` panel, reconstruction `P * Q^T`,
//! and a randomized truncated SVD built on them.
//!
//! All matrices are dense, row-major `f32` slices with explicit dimensions. Lengths are
//! checked; a mismatch is a [`KernelError`], never a panic.
//!
//! Backends: NEON (`fmla` by element, 8 x 8 register tile) on aarch64, the same kernel
//! on 256-bit AVX + FMA3 vectors (8 x 8 tile) on x86_64 when the CPU has them (detected
//! at run time), and a scalar 4 x 4 tile elsewhere. Results agree with a naive triple
//! loop within float rounding of the summation order (tests bound it at 1e-5 relative
//! to `|X||Q|`).

mod fused;
pub(crate) mod lanes;
pub(crate) mod micro;
mod orth;
mod svd;

pub use fused::{Int8Factor, reconstruct_i8};
pub use orth::{Orthonormalized, orthonormalize};
pub use svd::{TruncatedSvd, random_start, truncated_svd};

use crate::{Backend, KernelError};
use lanes::{FmaLanes, LanesJob};

/// The most columns the low-rank kernels accept.
pub const MAX_RANK: usize = 64;

fn check_rank(r: usize) -> Result<(), KernelError> {
    if r <= MAX_RANK {
        Ok(())
    } else {
        Err(KernelError::OutOfRange {
            name: "rank",
            value: r.to_string(),
            range: "0..=64",
        })
    }
}

/// The backend the GEMM kernels use on this CPU.
pub fn gemm_backend() -> Backend {
    struct Which;
    impl LanesJob for Which {
        type Output = Backend;
        #[inline(always)]
        fn run<L: FmaLanes>(self, _: L) -> Backend {
            L::BACKEND
        }
    }
    lanes::run(Which)
}

/// The argument checks of `X^T * P`.
fn check_xtp(
    x: &[f32],
    n: usize,
    d: usize,
    p: &[f32],
    r: usize,
    out: &[f32],
) -> Result<(), KernelError> {
    check_rank(r)?;
    KernelError::check_len("x", x.len(), n * d)?;
    KernelError::check_len("p", p.len(), n * r)?;
    KernelError::check_len("out", out.len(), d * r)
}

/// `out (n x r) = x (n x d) * q (d x r)`. `r <= 64`.
pub fn matmul_xq(
    x: &[f32],
    n: usize,
    d: usize,
    q: &[f32],
    r: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_xq(x, n, d, q, r, out)?;
    matmul_any_width(x, n, d, q, r, out);
    Ok(())
}

/// The argument checks of `X * Q`.
fn check_xq(
    x: &[f32],
    n: usize,
    d: usize,
    q: &[f32],
    r: usize,
    out: &[f32],
) -> Result<(), KernelError> {
    check_rank(r)?;
    KernelError::check_len("x", x.len(), n * d)?;
    KernelError::check_len("q", q.len(), d * r)?;
    KernelError::check_len("out", out.len(), n * r)
}

/// `out (n x c) = x (n x d) * b (d x c)` for any width `c`, dimensions already checked.
pub(crate) fn matmul_any_width(
    x: &[f32],
    n: usize,
    d: usize,
    b: &[f32],
    c: usize,
    out: &mut [f32],
) {
    if n == 0 || c == 0 {
        return;
    }
    matmul_packed(x, n, d, &micro::pack(b, d, c, packed_width()), c, out);
}

/// The column-block width of the active backend's packed right-hand panels.
fn packed_width() -> usize {
    struct Width;
    impl LanesJob for Width {
        type Output = usize;
        #[inline(always)]
        fn run<L: FmaLanes>(self, _: L) -> usize {
            micro::nr::<L>()
        }
    }
    lanes::run(Width)
}

/// One product on the lanes of this CPU, dimensions already checked: `out = x * B`
/// with B packed ([`micro::xq_packed`]), or `out = x^T * b` ([`micro::xtp`]).
struct Product<'a> {
    x: &'a [f32],
    n: usize,
    d: usize,
    /// B packed (`x * B`), or P (`x^T * P`).
    b: &'a [f32],
    c: usize,
    out: &'a mut [f32],
    transposed: bool,
}

impl LanesJob for Product<'_> {
    type Output = ();
    #[inline(always)]
    fn run<L: FmaLanes>(self, l: L) {
        let Self {
            x,
            n,
            d,
            b,
            c,
            out,
            transposed,
        } = self;
        if transposed {
            micro::xtp(l, x, n, d, b, c, out);
        } else {
            micro::xq_packed(l, x, n, d, b, c, out);
        }
    }
}

/// `out (n x c) = x (n x d) * B` for B (d x c) packed by [`micro::pack`] or
/// [`micro::pack_rows`] at [`packed_width`]; dimensions already checked.
fn matmul_packed(x: &[f32], n: usize, d: usize, packed: &[f32], c: usize, out: &mut [f32]) {
    if n > 0 && c > 0 {
        lanes::run(Product {
            x,
            n,
            d,
            b: packed,
            c,
            out,
            transposed: false,
        });
    }
}

/// `out (d x r) = x^T * p` for `x` (n x d) and `p` (n x r). `r <= 64`.
pub fn matmul_xtp(
    x: &[f32],
    n: usize,
    d: usize,
    p: &[f32],
    r: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_xtp(x, n, d, p, r, out)?;
    if d > 0 && r > 0 {
        lanes::run(Product {
            x,
            n,
            d,
            b: p,
            c: r,
            out,
            transposed: true,
        });
    }
    Ok(())
}

/// `out (n x d) = p (n x r) * q^T` for `q` (d x r): the reconstruction of a rank-`r`
/// factorisation. `r <= 64`.
pub fn reconstruct(
    p: &[f32],
    n: usize,
    r: usize,
    q: &[f32],
    d: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_rank(r)?;
    KernelError::check_len("p", p.len(), n * r)?;
    KernelError::check_len("q", q.len(), d * r)?;
    KernelError::check_len("out", out.len(), n * d)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    // The right-hand factor is Q^T (r x d), packed straight from Q.
    let packed = micro::pack_rows(r, d, packed_width(), |k, j0, dst| {
        for (c, v) in dst.iter_mut().enumerate() {
            *v = q[(j0 + c) * r + k];
        }
    });
    matmul_packed(p, n, r, &packed, d, out);
    Ok(())
}

/// A portable scalar run of [`matmul_xq`] (the baseline of the instruction-count
/// benchmark; lengths as for `matmul_xq`).
pub fn matmul_xq_scalar(
    x: &[f32],
    n: usize,
    d: usize,
    q: &[f32],
    r: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_xq(x, n, d, q, r, out)?;
    if n > 0 && r > 0 {
        micro::xq(lanes::Scalar, x, n, d, q, r, out);
    }
    Ok(())
}

/// A portable scalar run of [`matmul_xtp`] (the baseline of the instruction-count
/// benchmark; lengths as for `matmul_xtp`).
pub fn matmul_xtp_scalar(
    x: &[f32],
    n: usize,
    d: usize,
    p: &[f32],
    r: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_xtp(x, n, d, p, r, out)?;
    if d > 0 && r > 0 {
        micro::xtp(lanes::Scalar, x, n, d, p, r, out);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
