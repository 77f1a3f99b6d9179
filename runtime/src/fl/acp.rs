//! ACP-SGD-style rounds (`acp:r=R`) at the model level: the factor each compressed tensor
//! shares in a round, its bytes at the end of a RoundTask's payload, round 1's random
//! start, and the next round's, made from the update the cloud applied.
//!
//! A round sharing the right factor `R` of a tensor gets back `M_i R` from each device
//! and applies (for FedAvg) `mean(M_i R) R^T`; the next round shares the left factor
//! `orth(A R)`, with `A` the delta applied, and so on alternately (see
//! [`crate::codec::Side`]). Each device keeps the error feedback of what its factor
//! left out, so nothing is lost for good.

use super::Layout;
use super::update::tensor_codec;
use crate::codec::{CodecError, Shape, SharedFactor, Side};
use crate::wire::CodecDesc;
use tandem_kernels::linalg;

/// Why shared factors could not be made or read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum AcpError {
    /// The round's codec shares no factors.
    #[error("codec {0:?} shares no factors")]
    NotAcp(CodecDesc),
    /// The bytes do not hold this layout's factors.
    #[error("shared factors: {0}")]
    Bytes(&'static str),
    /// A factor does not fit its tensor, or is not finite.
    #[error("shared factor of tensor {tensor}: {error}")]
    Factor {
        /// The tensor.
        tensor: usize,
        /// What is wrong.
        error: CodecError,
    },
}

/// The shared factor of every tensor of a layout that ACP compresses (`None` for the
/// tensors that travel raw).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SharedFactors {
    tensors: Vec<Option<SharedFactor>>,
}

/// The rank of an ACP codec.
fn acp_rank(desc: CodecDesc) -> Result<usize, AcpError> {
    match desc {
        CodecDesc::Acp { rank, .. } => Ok(usize::from(rank)),
        other => Err(AcpError::NotAcp(other)),
    }
}

/// For each tensor of `layout`: its matrix shape and effective rank, if `desc` compresses it.
fn compressed(layout: &Layout, desc: CodecDesc) -> Result<Vec<Option<(Shape, usize)>>, AcpError> {
    let rank = acp_rank(desc)?;
    Ok(layout
        .specs()
        .iter()
        .map(|spec| {
            let shape = spec.matrix();
            let r = rank.min(shape.rows).min(shape.cols);
            (tensor_codec(desc, spec.elements()) == desc && r > 0).then_some((shape, r))
        })
        .collect())
}

/// `rows x r` orthonormal columns spanning a random subspace.
fn random_factor(rows: usize, r: usize, seed: u64) -> Vec<f32> {
    let mut values = linalg::random_start(rows * r, seed);
    orthonormal_filled(&mut values, rows, r, seed);
    values
}

/// Orthonormalises `values` (`rows x r`) in place; columns it cannot keep (dependent on
/// the others, or zero: a delta of rank below `r`) are refilled from a random start and
/// orthonormalised with the rest, so the factor always has `r` directions.
fn orthonormal_filled(values: &mut [f32], rows: usize, r: usize, seed: u64) {
    if linalg::orthonormalize(values, rows, r).is_ok_and(|o| o.rank == r) {
        return;
    }
    let random = linalg::random_start(rows * r, seed.wrapping_add(0x5eed));
    for j in 0..r {
        if (0..rows).all(|k| values[k * r + j] == 0.0) {
            for k in 0..rows {
                values[k * r + j] = random[k * r + j];
            }
        }
    }
    let _ = linalg::orthonormalize(values, rows, r);
}

impl SharedFactors {
    /// Round 1's: a random right factor of each compressed tensor, from `seed`.
    pub fn initial(layout: &Layout, desc: CodecDesc, seed: u64) -> Result<Self, AcpError> {
        let tensors = compressed(layout, desc)?
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                c.map(|(shape, r)| SharedFactor {
                    side: Side::Right,
                    values: random_factor(shape.cols, r, seed ^ (i as u64 + 1)),
                })
            })
            .collect();
        Ok(Self { tensors })
    }

    /// Whether these factors fit `layout` under `desc` (factors saved for another rank
    /// or model do not).
    pub fn fits(&self, layout: &Layout, desc: CodecDesc) -> bool {
        let Ok(expected) = compressed(layout, desc) else {
            return false;
        };
        expected.len() == self.tensors.len()
            && expected
                .iter()
                .zip(&self.tensors)
                .all(|(want, factor)| match (want, factor) {
                    (None, None) => true,
                    (Some((shape, r)), Some(factor)) => factor.check(*shape, *r).is_ok(),
                    _ => false,
                })
    }

    /// Tensor `i`'s factor, if ACP compresses it.
    pub fn tensor(&self, i: usize) -> Option<&SharedFactor> {
        self.tensors.get(i).and_then(Option::as_ref)
    }

    /// The bytes of a RoundTask: per compressed tensor, a side byte and the f32 factor.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for factor in self.tensors.iter().flatten() {
            out.push(match factor.side {
                Side::Right => 0,
                Side::Left => 1,
            });
            for v in &factor.values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Reads what [`SharedFactors::to_bytes`] wrote for `layout` and `desc`; every size
    /// follows from the layout and the side bytes, and is checked before it is read.
    pub fn from_bytes(layout: &Layout, desc: CodecDesc, bytes: &[u8]) -> Result<Self, AcpError> {
        let mut rest = bytes;
        let mut tensors = Vec::new();
        for (tensor, c) in compressed(layout, desc)?.into_iter().enumerate() {
            let Some((shape, r)) = c else {
                tensors.push(None);
                continue;
            };
            let Some((&side, tail)) = rest.split_first() else {
                return Err(AcpError::Bytes("truncated"));
            };
            let side = match side {
                0 => Side::Right,
                1 => Side::Left,
                _ => return Err(AcpError::Bytes("a side byte is neither 0 nor 1")),
            };
            let len = side.shared_rows(shape) * r * 4;
            if tail.len() < len {
                return Err(AcpError::Bytes("truncated"));
            }
            let (mine, tail) = tail.split_at(len);
            let factor = SharedFactor {
                side,
                values: mine
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            };
            factor
                .check(shape, r)
                .map_err(|error| AcpError::Factor { tensor, error })?;
            tensors.push(Some(factor));
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(AcpError::Bytes("trailing bytes"));
        }
        Ok(Self { tensors })
    }

    /// The next round's factors after a round that moved the global model from
    /// `before` to `after` (see [`SharedFactors::advance`]).
    pub fn after_round(&self, layout: &Layout, before: &[f32], after: &[f32], seed: u64) -> Self {
        let applied: Vec<f32> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        self.advance(layout, &applied, seed)
    }

    /// The next round's factors, given `applied`, the flat delta the cloud applied to
    /// the global model this round: the other side of each tensor, `orth(A R)` after a
    /// right factor and `orth(A^T L)` after a left one. A tensor `applied` left unchanged
    /// (nothing aggregated) keeps its factor; directions the delta does not span (a
    /// delta of lower rank) are filled from a random start (`seed`).
    pub fn advance(&self, layout: &Layout, applied: &[f32], seed: u64) -> Self {
        let tensors = self
            .tensors
            .iter()
            .enumerate()
            .map(|(i, factor)| {
                let factor = factor.as_ref()?;
                let spec = &layout.specs()[i];
                let shape = spec.matrix();
                let a = &applied[layout.range(i)];
                if a.iter().all(|v| *v == 0.0) || a.iter().any(|v| !v.is_finite()) {
                    return Some(factor.clone());
                }
                let side = factor.side.other();
                let rows = side.shared_rows(shape);
                let r = factor.values.len() / factor.side.shared_rows(shape).max(1);
                let mut next = vec![0.0; rows * r];
                let (n, d) = (shape.rows, shape.cols);
                let product = match factor.side {
                    Side::Right => linalg::matmul_xq(a, n, d, &factor.values, r, &mut next),
                    Side::Left => linalg::matmul_xtp(a, n, d, &factor.values, r, &mut next),
                };
                let seed = seed ^ (i as u64 + 1);
                match product {
                    Ok(()) => orthonormal_filled(&mut next, rows, r, seed),
                    Err(_) => next = random_factor(rows, r, seed),
                }
                Some(SharedFactor { side, values: next })
            })
            .collect();
        Self { tensors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fl::update::{UpdateEncoder, decode_shared};

    fn layout() -> Layout {
        Layout::from_shapes(&[
            ("fc.weight", &[48, 64]),
            ("fc.bias", &[48]),
            ("conv.weight", &[16, 4, 5, 5]),
        ])
    }

    const ACP: CodecDesc = CodecDesc::Acp {
        rank: 4,
        factor_bits: 32,
    };

    /// A delta of rank 2 in every tensor (plus the bias), from `seed`.
    fn low_rank_delta(layout: &Layout, seed: u32) -> Vec<f32> {
        let mut out = Vec::new();
        for spec in layout.specs() {
            let shape = spec.matrix();
            for i in 0..shape.rows {
                for j in 0..shape.cols {
                    let (x, y) = (i as f32, j as f32 + seed as f32);
                    out.push(
                        ((x * 0.37 + 0.5).sin() * (y * 0.11).cos() + x * 0.05 * (y * 0.21).sin())
                            * 0.01,
                    );
                }
            }
        }
        out
    }

    #[test]
    fn factors_round_trip_through_bytes_and_refuse_damage() {
        let layout = layout();
        let shared = SharedFactors::initial(&layout, ACP, 7).unwrap();
        assert!(shared.tensor(0).is_some() && shared.tensor(2).is_some());
        assert!(shared.tensor(1).is_none(), "the 48-value bias travels raw");
        // Columns orthonormal: R^T R = I.
        let r0 = shared.tensor(0).unwrap();
        for a in 0..4 {
            for b in 0..4 {
                let dot: f32 = (0..64)
                    .map(|k| r0.values[k * 4 + a] * r0.values[k * 4 + b])
                    .sum();
                assert!(
                    (dot - f32::from(u8::from(a == b))).abs() < 1e-4,
                    "{a} {b} {dot}"
                );
            }
        }
        let bytes = shared.to_bytes();
        assert_eq!(bytes.len(), 2 + (64 * 4 + 100 * 4) * 4);
        assert_eq!(
            SharedFactors::from_bytes(&layout, ACP, &bytes).unwrap(),
            shared
        );
        assert!(shared.fits(&layout, ACP));
        let rank_2 = CodecDesc::Acp {
            rank: 2,
            factor_bits: 32,
        };
        assert!(!shared.fits(&layout, rank_2), "saved for rank 4");
        let short = &bytes[..bytes.len() - 1];
        assert_eq!(
            SharedFactors::from_bytes(&layout, ACP, short),
            Err(AcpError::Bytes("truncated"))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SharedFactors::from_bytes(&layout, ACP, &long),
            Err(AcpError::Bytes("trailing bytes"))
        );
        let mut sided = bytes.clone();
        sided[0] = 2;
        assert!(SharedFactors::from_bytes(&layout, ACP, &sided).is_err());
        let mut nan = bytes;
        nan[1..5].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            SharedFactors::from_bytes(&layout, ACP, &nan),
            Err(AcpError::Factor { tensor: 0, .. })
        ));
        assert_eq!(
            SharedFactors::initial(&layout, CodecDesc::Identity, 1),
            Err(AcpError::NotAcp(CodecDesc::Identity))
        );
    }

    #[test]
    fn alternating_rounds_recover_a_low_rank_mean_update_and_the_bias_exactly() {
        // Three devices send the same rank-2 delta every round; FedAvg applies the mean of
        // what it decodes. With error feedback and alternating factors, what the cloud
        // has applied after a few rounds approaches the sum of the true deltas.
        let layout = layout();
        let delta = low_rank_delta(&layout, 3);
        let mut shared = SharedFactors::initial(&layout, ACP, 11).unwrap();
        let mut devices: Vec<UpdateEncoder> = (0..3)
            .map(|_| UpdateEncoder::new(layout.clone(), ACP).unwrap())
            .collect();
        let mut applied_total = vec![0.0f32; layout.len()];
        let rounds = 6;
        for round in 0..rounds {
            let mut applied = vec![0.0f32; layout.len()];
            for device in &mut devices {
                let bytes = device.encode_shared(&delta, Some(&shared)).unwrap();
                let decoded = decode_shared(ACP, &layout, &bytes, Some(&shared)).unwrap();
                for (a, d) in applied.iter_mut().zip(decoded) {
                    *a += d / 3.0;
                }
            }
            for (t, a) in applied_total.iter_mut().zip(&applied) {
                *t += a;
            }
            shared = shared.advance(&layout, &applied, round);
        }
        let truth: Vec<f32> = delta.iter().map(|d| d * rounds as f32).collect();
        let rel = |range: std::ops::Range<usize>| {
            let err: f32 = range
                .clone()
                .map(|i| (applied_total[i] - truth[i]).powi(2))
                .sum();
            let norm: f32 = range.map(|i| truth[i].powi(2)).sum();
            (err / norm).sqrt()
        };
        assert!(rel(layout.range(0)) < 0.05, "fc: {}", rel(layout.range(0)));
        assert!(
            rel(layout.range(2)) < 0.05,
            "conv: {}",
            rel(layout.range(2))
        );
        assert!(
            rel(layout.range(1)) < 1e-6,
            "bias: {}",
            rel(layout.range(1))
        );
        // Each update is one factor of each compressed tensor: rows x 4 or cols x 4 f32.
        let bytes = devices[0].encode_shared(&delta, Some(&shared)).unwrap();
        assert!(bytes.len() < 4 * (64 * 4 + 100 * 4 + 48) + 4 * 3 + 1);
    }

    #[test]
    fn an_update_without_its_factors_is_refused() {
        let layout = layout();
        let mut encoder = UpdateEncoder::new(layout.clone(), ACP).unwrap();
        let delta = low_rank_delta(&layout, 1);
        assert!(encoder.encode_shared(&delta, None).is_err());
        let shared = SharedFactors::initial(&layout, ACP, 1).unwrap();
        let bytes = encoder.encode_shared(&delta, Some(&shared)).unwrap();
        assert!(decode_shared(ACP, &layout, &bytes, None).is_err());
        let other = shared.advance(&layout, &delta, 0);
        assert!(
            decode_shared(ACP, &layout, &bytes, Some(&other)).is_err(),
            "a factor of the other side has another length"
        );
    }
}
