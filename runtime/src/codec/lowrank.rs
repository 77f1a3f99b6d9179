//! `LowRank`: `H (n x d) ~ P Q^T` with `P` orthonormal (n x r) and `Q = H^T P` (d x r),
//! found by PowerSGD-style subspace iteration warm-started from the previous step's Q.

use super::format::{FACTOR_BLOCK, Reader, Writer, effective_rank};
use super::{CodecError, Shape};
use tandem_kernels::linalg;

/// A warm start: the shape and rank it was made for, and the orthonormal Q (d x r).
pub(super) type Warm = (Shape, usize, Vec<f32>);

/// The previous step's orthonormalised Q, reused when shape and rank match.
#[derive(Clone, Debug, Default)]
pub(super) struct State {
    warm: Option<Warm>,
    steps: u64,
}

impl State {
    /// The warm start (shape, rank, orthonormal Q) and the encodes done.
    pub(super) fn warm(&self) -> (Option<&Warm>, u64) {
        (self.warm.as_ref(), self.steps)
    }

    /// State with a warm start carried over (from a checkpoint).
    pub(super) fn with_warm(warm: Option<Warm>, steps: u64) -> Self {
        Self { warm, steps }
    }

    /// Runs `max(1, power_iters)` rounds of `P = H Q; orth(P); Q = H^T P` (Q is
    /// re-orthonormalised between rounds), then sends P and Q at `bits`.
    pub(super) fn encode(
        &mut self,
        h: &[f32],
        shape: Shape,
        rank: usize,
        power_iters: u8,
        bits: u8,
    ) -> Result<Vec<u8>, CodecError> {
        let (n, d) = (shape.rows, shape.cols);
        let r = effective_rank(rank, shape);
        if r == 0 {
            return Ok(Vec::new());
        }
        self.steps += 1;
        let mut q = match self.warm.take() {
            Some((s, wr, q)) if s == shape && wr == r => q,
            _ => linalg::random_start(d * r, self.steps),
        };
        let mut p = vec![0.0; n * r];
        let rounds = usize::from(power_iters.max(1));
        for round in 0..rounds {
            linalg::matmul_xq(h, n, d, &q, r, &mut p)?;
            linalg::orthonormalize(&mut p, n, r)?;
            linalg::matmul_xtp(h, n, d, &p, r, &mut q)?;
            if round + 1 < rounds {
                linalg::orthonormalize(&mut q, d, r)?;
            }
        }
        let mut warm = q.clone();
        linalg::orthonormalize(&mut warm, d, r)?;
        self.warm = Some((shape, r, warm));
        let mut w = Writer::with_capacity(super::format::factor_len((n + d) * r, bits));
        w.factor(&p, bits)?;
        w.factor(&q, bits)?;
        Ok(w.finish())
    }
}

/// Reads P and Q and returns `P Q^T`.
pub(super) fn decode(
    r: &mut Reader,
    shape: Shape,
    rank: usize,
    bits: u8,
) -> Result<Vec<f32>, CodecError> {
    let (n, d) = (shape.rows, shape.cols);
    let k = effective_rank(rank, shape);
    let mut out = vec![0.0; n * d];
    if k == 0 {
        return Ok(out);
    }
    if bits == 8 {
        // Dequantised inside the reconstruction, without f32 copies of the factors.
        let (pc, ps) = r.int8_codes(n * k, FACTOR_BLOCK)?;
        let (qc, qs) = r.int8_codes(d * k, FACTOR_BLOCK)?;
        let factor = |codes, scales| linalg::Int8Factor {
            codes,
            scales,
            block: FACTOR_BLOCK,
        };
        linalg::reconstruct_i8(factor(&pc, &ps), n, k, factor(&qc, &qs), d, &mut out)?;
        return Ok(out);
    }
    let p = r.factor(n * k, bits)?;
    let q = r.factor(d * k, bits)?;
    linalg::reconstruct(&p, n, k, &q, d, &mut out)?;
    Ok(out)
}
