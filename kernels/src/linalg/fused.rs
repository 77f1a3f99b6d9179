//! Reconstruction `P Q^T` fused with int8 dequantisation: the decoder's side of a
//! low-rank factorisation sent at 8 bits.

use super::{check_rank, matmul_packed, micro, packed_width};
use crate::KernelError;
use crate::quant::{block_count, check_block};

/// Rows of P dequantised at a time (a 64 x 64 block is 16 KiB of f32).
const ROW_BLOCK: usize = 64;

/// A row-major matrix held as int8 codes with one scale per `block` consecutive values
/// (the layout [`crate::quant::quantize_i8`] writes): value `i` is
/// `codes[i] * scales[i / block]`.
#[derive(Clone, Copy, Debug)]
pub struct Int8Factor<'a> {
    /// One code per value.
    pub codes: &'a [i8],
    /// One scale per block.
    pub scales: &'a [f32],
    /// Values per scale (at least 1).
    pub block: usize,
}

impl Int8Factor<'_> {
    fn check(&self, name: &'static str, len: usize) -> Result<(), KernelError> {
        check_block(self.block)?;
        KernelError::check_len(name, self.codes.len(), len)?;
        KernelError::check_len("scales", self.scales.len(), block_count(len, self.block))
    }

    #[inline]
    fn value(&self, i: usize) -> f32 {
        f32::from(self.codes[i]) * self.scales[i / self.block]
    }
}

/// `out (n x d) = P Q^T` for P (n x r) and Q (d x r) given as int8 codes, `r <= 64`.
///
/// Neither factor is dequantised into a full f32 copy: Q's values are written straight
/// into the GEMM's packed panel, and P's are dequantised `64` rows at a time as the
/// GEMM consumes them. The result is bit-identical to dequantising both with
/// [`crate::quant::dequantize_i8`] and calling [`super::reconstruct`] (same values,
/// same summation order).
pub fn reconstruct_i8(
    p: Int8Factor<'_>,
    n: usize,
    r: usize,
    q: Int8Factor<'_>,
    d: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_rank(r)?;
    p.check("p", n * r)?;
    q.check("q", d * r)?;
    KernelError::check_len("out", out.len(), n * d)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    // The right-hand factor is Q^T (r x d): element (k, j) is Q[j][k].
    let packed = micro::pack_rows(r, d, packed_width(), |k, j0, dst| {
        for (c, v) in dst.iter_mut().enumerate() {
            *v = q.value((j0 + c) * r + k);
        }
    });
    let mut rows = vec![0.0f32; ROW_BLOCK * r.max(1)];
    for i0 in (0..n).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(n);
        let block = &mut rows[..(i1 - i0) * r];
        for (t, v) in block.iter_mut().enumerate() {
            *v = p.value(i0 * r + t);
        }
        matmul_packed(block, i1 - i0, r, &packed, d, &mut out[i0 * d..i1 * d]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::{random_start as data, reconstruct};
    use crate::quant::{Rounding, dequantize_i8, quantize_i8};

    fn quantised(v: &[f32], block: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
        let mut codes = vec![0i8; v.len()];
        let mut scales = vec![0.0; block_count(v.len(), block)];
        quantize_i8(v, block, Rounding::Nearest, &mut codes, &mut scales).unwrap();
        let mut back = vec![0.0; v.len()];
        dequantize_i8(&codes, &scales, block, &mut back).unwrap();
        (codes, scales, back)
    }

    #[test]
    fn matches_dequantise_then_reconstruct_bit_for_bit() {
        for (n, d, r, block) in [
            (0, 5, 3, 64),
            (7, 0, 3, 64),
            (5, 4, 0, 64),
            (1, 1, 1, 1),
            (130, 37, 8, 64),
            (67, 129, 13, 7),
            (200, 384, 64, 64),
        ] {
            let (pc, ps, p) = quantised(&data(n * r, 1), block);
            let (qc, qs, q) = quantised(&data(d * r, 2), block);
            let mut want = vec![f32::NAN; n * d];
            reconstruct(&p, n, r, &q, d, &mut want).unwrap();
            let mut got = vec![f32::NAN; n * d];
            let pf = Int8Factor {
                codes: &pc,
                scales: &ps,
                block,
            };
            let qf = Int8Factor {
                codes: &qc,
                scales: &qs,
                block,
            };
            reconstruct_i8(pf, n, r, qf, d, &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{n}x{d} r{r} block {block}");
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let codes = [0i8; 6];
        let scales = [1.0f32; 1];
        let f = Int8Factor {
            codes: &codes,
            scales: &scales,
            block: 64,
        };
        let mut out = [0.0f32; 4];
        assert!(reconstruct_i8(f, 2, 3, f, 2, &mut out).is_ok());
        assert!(reconstruct_i8(f, 2, 3, f, 3, &mut out).is_err());
        let zero_block = Int8Factor { block: 0, ..f };
        assert!(reconstruct_i8(zero_block, 2, 3, f, 2, &mut out).is_err());
        let few_scales = Int8Factor { block: 2, ..f };
        assert!(reconstruct_i8(few_scales, 2, 3, f, 2, &mut out).is_err());
    }
}
