//! Picking a codec per step from a byte budget or an error bound.

use super::{CodecError, Encoder, Report, Shape};
use crate::wire::CodecDesc;

/// What the link asks of a step's encoding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// At most this many bytes; the least error among those that fit wins.
    Bytes(usize),
    /// Relative error at most this; the fewest bytes among those that meet it wins.
    RelError(f64),
}

/// Encodes `h` with each of `candidates` (fresh encoders: no warm start, no residual)
/// and returns the best one for `target`, with its bytes and report. The error of
/// every candidate is measured by decoding, so the bound is honoured exactly, never
/// estimated. Cost: one encode and decode per candidate.
///
/// Errors with [`CodecError::TargetUnreachable`] (naming the best error reached) when
/// no candidate meets the target; a caller that must send anyway can add `Identity`
/// (error 0) to the candidates.
pub fn choose(
    h: &[f32],
    shape: Shape,
    target: Target,
    candidates: &[CodecDesc],
) -> Result<(CodecDesc, Vec<u8>, Report), CodecError> {
    let mut best: Option<(CodecDesc, Vec<u8>, Report)> = None;
    let mut closest: Option<Report> = None;
    for &desc in candidates {
        let (bytes, report) = Encoder::new(desc)?.encode(h, shape)?;
        if closest.is_none_or(|c| report.rel_error < c.rel_error) {
            closest = Some(report);
        }
        let meets = match target {
            Target::Bytes(max) => report.bytes <= max,
            Target::RelError(max) => report.rel_error <= max,
        };
        let better = best.as_ref().is_none_or(|(_, _, b)| match target {
            Target::Bytes(_) => report.rel_error < b.rel_error,
            Target::RelError(_) => report.bytes < b.bytes,
        });
        if meets && better {
            best = Some((desc, bytes, report));
        }
    }
    best.ok_or_else(|| {
        let c = closest.unwrap_or(Report {
            bytes: 0,
            ratio: 0.0,
            rel_error: f64::INFINITY,
        });
        CodecError::TargetUnreachable {
            best_error: c.rel_error,
            best_bytes: c.bytes,
        }
    })
}

/// `LowRank` candidates of ranks 1, 2, 4, .., 64 at `power_iters` and `bits`.
pub fn lowrank_ladder(power_iters: u8, factor_bits: u8) -> Vec<CodecDesc> {
    [1u16, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .map(|rank| CodecDesc::LowRank {
            rank,
            power_iters,
            factor_bits,
        })
        .collect()
}
