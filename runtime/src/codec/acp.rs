//! `Acp`: one factor of a rank-`r` update against a factor both sides already hold, in
//! the way of ACP-SGD (Zhang et al., "Evaluation and Optimization of Gradient Compression
//! for Distributed Deep Learning", ICDCS 2023). For a tensor `M` (`n x d`) and a shared,
//! orthonormal factor:
//! - [`Side::Right`] `R` (`d x r`): the sender sends `L = M R` (`n x r`); `M ~ L R^T`;
//! - [`Side::Left`] `L` (`n x r`): the sender sends `Q = M^T L` (`d x r`); `M ~ L Q^T`.
//!
//! Rounds alternate sides, and the receiver orthonormalises the average of what it
//! received into the next shared factor, so each round costs one factor up, no power
//! iteration on the sender, and the average is exact (the factors are linear in `M`).
//! Error feedback (the sender's residual) lives in the [`super::Encoder`].

use super::format::{Reader, Writer, effective_rank, factor_len};
use super::{CodecError, Shape};
use tandem_kernels::linalg;

/// Which factor of a tensor is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// `R` (`cols x r`): the sender sends the left factor.
    Right,
    /// `L` (`rows x r`): the sender sends the right factor.
    Left,
}

impl Side {
    /// The other side: what the next round shares.
    pub fn other(self) -> Self {
        match self {
            Self::Right => Self::Left,
            Self::Left => Self::Right,
        }
    }

    /// Rows of the shared factor of a `shape` tensor.
    pub fn shared_rows(self, shape: Shape) -> usize {
        match self {
            Self::Right => shape.cols,
            Self::Left => shape.rows,
        }
    }

    /// Rows of the factor sent.
    pub fn sent_rows(self, shape: Shape) -> usize {
        self.other().shared_rows(shape)
    }
}

/// The factor both sides hold for one tensor in one round: orthonormal columns,
/// `side.shared_rows(shape) x r` row-major.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SharedFactor {
    /// Which factor it is.
    pub side: Side,
    /// Its entries.
    pub values: Vec<f32>,
}

impl SharedFactor {
    /// Checks the factor fits a `shape` tensor at `rank` (its effective rank).
    pub fn check(&self, shape: Shape, rank: usize) -> Result<usize, CodecError> {
        let r = effective_rank(rank, shape);
        let expected = self.side.shared_rows(shape) * r;
        if self.values.len() != expected {
            return Err(CodecError::Inconsistent(
                "shared factor does not fit the tensor",
            ));
        }
        if let Some(at) = self.values.iter().position(|v| !v.is_finite()) {
            return Err(CodecError::NonFinite { at });
        }
        Ok(r)
    }
}

/// Bytes of the factor sent for a `shape` tensor.
pub(super) fn encoded_len(shape: Shape, rank: usize, bits: u8, side: Side) -> usize {
    factor_len(side.sent_rows(shape) * effective_rank(rank, shape), bits)
}

/// The factor of `m` (`shape`) against `shared`, at `bits`.
pub(super) fn encode(
    m: &[f32],
    shape: Shape,
    shared: &SharedFactor,
    rank: usize,
    bits: u8,
) -> Result<Vec<u8>, CodecError> {
    let r = shared.check(shape, rank)?;
    let (n, d) = (shape.rows, shape.cols);
    let mut sent = vec![0.0; shared.side.sent_rows(shape) * r];
    match shared.side {
        Side::Right => linalg::matmul_xq(m, n, d, &shared.values, r, &mut sent)?,
        Side::Left => linalg::matmul_xtp(m, n, d, &shared.values, r, &mut sent)?,
    }
    let mut w = Writer::with_capacity(factor_len(sent.len(), bits));
    w.factor(&sent, bits)?;
    Ok(w.finish())
}

/// `M ~ L R^T` from the factor in `r` and `shared`.
pub(super) fn decode(
    reader: &mut Reader,
    shape: Shape,
    shared: &SharedFactor,
    rank: usize,
    bits: u8,
) -> Result<Vec<f32>, CodecError> {
    let r = shared.check(shape, rank)?;
    let (n, d) = (shape.rows, shape.cols);
    let sent = reader.factor(shared.side.sent_rows(shape) * r, bits)?;
    let mut out = vec![0.0; n * d];
    match shared.side {
        Side::Right => linalg::reconstruct(&sent, n, r, &shared.values, d, &mut out)?,
        Side::Left => linalg::reconstruct(&shared.values, n, r, &sent, d, &mut out)?,
    }
    Ok(out)
}
