//! A model update (or a model) on the wire: every tensor of the [`Layout`] encoded with
//! the round's codec, one after another, each behind its byte length (`u32`, little
//! endian). Tensors under [`RAW_BELOW`] elements (biases, small kernels) travel as raw
//! f32: compressing them saves little and costs accuracy.
//!
//! The encoder keeps one [`Encoder`] per tensor across rounds, so top-k's error-feedback
//! residual and PowerSGD's warm-started `Q` belong to the tensor they were made for.

use super::Layout;
use super::acp::SharedFactors;
use crate::codec::{self, CodecError, Encoder, EncoderMemory};
use crate::wire::CodecDesc;

/// Tensors with fewer elements travel raw.
pub const RAW_BELOW: usize = 1024;

/// Why an update could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum UpdateError {
    /// A value of the update is NaN or infinite.
    #[error("non-finite value at parameter {at}")]
    NonFinite {
        /// Its index in the flat vector.
        at: usize,
    },
    /// The flat vector's length is not the layout's.
    #[error("{got} values for a model of {expected} parameters")]
    Length {
        /// Parameters of the model.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// The bytes end inside a tensor or its length prefix.
    #[error("truncated at tensor {tensor}")]
    Truncated {
        /// The tensor being read.
        tensor: usize,
    },
    /// Bytes left over after the last tensor.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A tensor's codec refused it.
    #[error("tensor {tensor}: {error}")]
    Codec {
        /// The tensor.
        tensor: usize,
        /// What the codec said.
        error: CodecError,
    },
}

/// Bytes of `layout`'s identity (f32) encoding: each tensor's values behind its length.
/// The size of a full model in a RoundTask, and the baseline every reduction is against.
pub fn identity_len(layout: &Layout) -> usize {
    layout.len() * 4 + layout.specs().len() * 4
}

/// The codec a tensor of `elements` uses under the round's `desc`.
pub fn tensor_codec(desc: CodecDesc, elements: usize) -> CodecDesc {
    if elements < RAW_BELOW {
        CodecDesc::Identity
    } else {
        desc
    }
}

/// Encodes flat vectors of one layout with one codec, keeping per-tensor state.
#[derive(Clone, Debug)]
pub struct UpdateEncoder {
    layout: Layout,
    desc: CodecDesc,
    encoders: Vec<Encoder>,
}

impl UpdateEncoder {
    /// An encoder of `layout`'s tensors with `desc`, with no state yet.
    pub fn new(layout: Layout, desc: CodecDesc) -> Result<Self, UpdateError> {
        let fresh = vec![EncoderMemory::default(); layout.specs().len()];
        Self::restore(layout, desc, fresh)
    }

    /// The round codec.
    pub fn desc(&self) -> CodecDesc {
        self.desc
    }

    /// Every tensor's codec state, for a checkpoint.
    pub fn memory(&self) -> Vec<EncoderMemory> {
        self.encoders.iter().map(Encoder::memory).collect()
    }

    /// An encoder that continues from `memory` (as [`Self::memory`] gave it).
    pub fn restore(
        layout: Layout,
        desc: CodecDesc,
        memory: Vec<EncoderMemory>,
    ) -> Result<Self, UpdateError> {
        if memory.len() != layout.specs().len() {
            return Err(UpdateError::Length {
                expected: layout.specs().len(),
                got: memory.len(),
            });
        }
        let encoders = layout
            .specs()
            .iter()
            .zip(memory)
            .enumerate()
            .map(|(tensor, (spec, memory))| {
                Encoder::restore(tensor_codec(desc, spec.elements()), memory)
                    .map_err(|error| UpdateError::Codec { tensor, error })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            layout,
            desc,
            encoders,
        })
    }

    /// The bytes of `values`; a non-finite value is refused before any state changes.
    pub fn encode(&mut self, values: &[f32]) -> Result<Vec<u8>, UpdateError> {
        self.encode_shared(values, None)
    }

    /// [`UpdateEncoder::encode`] against the round's `shared` factors (ACP needs them,
    /// the other codecs ignore them).
    pub fn encode_shared(
        &mut self,
        values: &[f32],
        shared: Option<&SharedFactors>,
    ) -> Result<Vec<u8>, UpdateError> {
        if values.len() != self.layout.len() {
            return Err(UpdateError::Length {
                expected: self.layout.len(),
                got: values.len(),
            });
        }
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(UpdateError::NonFinite { at });
        }
        let mut out = Vec::new();
        for (tensor, (spec, encoder)) in self
            .layout
            .specs()
            .iter()
            .zip(&mut self.encoders)
            .enumerate()
        {
            let factor = shared.and_then(|s| s.tensor(tensor));
            let bytes = encoder
                .encode_shared(&values[self.layout.range(tensor)], spec.matrix(), factor)
                .map_err(|error| UpdateError::Codec { tensor, error })?;
            let len = u32::try_from(bytes.len()).map_err(|_| UpdateError::Codec {
                tensor,
                error: CodecError::Oversized {
                    expected: u32::MAX as usize,
                    found: bytes.len(),
                },
            })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }
}

/// The flat vector that `bytes` encode for `layout` under `desc`. Every length is checked
/// against what is left before anything is decoded, and every tensor's codec checks its
/// own bytes against the tensor's shape (see [`codec::decode`]).
pub fn decode(desc: CodecDesc, layout: &Layout, bytes: &[u8]) -> Result<Vec<f32>, UpdateError> {
    decode_shared(desc, layout, bytes, None)
}

/// [`decode`] of an update made against the round's `shared` factors (ACP).
pub fn decode_shared(
    desc: CodecDesc,
    layout: &Layout,
    bytes: &[u8],
    shared: Option<&SharedFactors>,
) -> Result<Vec<f32>, UpdateError> {
    let mut out = Vec::with_capacity(layout.len());
    let mut rest = bytes;
    for (tensor, spec) in layout.specs().iter().enumerate() {
        let truncated = UpdateError::Truncated { tensor };
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(truncated);
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(truncated);
        }
        let (mine, tail) = tail.split_at(len);
        let factor = shared.and_then(|s| s.tensor(tensor));
        let codec = tensor_codec(desc, spec.elements());
        let values = codec::decode_shared(codec, spec.matrix(), mine, factor)
            .map_err(|error| UpdateError::Codec { tensor, error })?;
        out.extend_from_slice(&values);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(UpdateError::Trailing(rest.len()));
    }
    if let Some(at) = out.iter().position(|v| !v.is_finite()) {
        return Err(UpdateError::NonFinite { at });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LeNet's conv2 kernel, fc1 weight (burn's [in, out]) and a bias.
    fn layout() -> Layout {
        Layout::from_shapes(&[
            ("conv2.weight", &[16, 6, 5, 5]),
            ("fc1.weight", &[256, 120]),
            ("fc1.bias", &[120]),
        ])
    }

    /// A rank-2 matrix per tensor plus a little structure-free noise, deterministic.
    fn delta(layout: &Layout, noise: f32) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(9);
        let mut out = Vec::new();
        for spec in layout.specs() {
            let m = spec.matrix();
            for r in 0..m.rows {
                for c in 0..m.cols {
                    let low = (r as f32 * 0.1).sin() * (c as f32 * 0.05).cos()
                        + 0.5 * (r as f32 * 0.03).cos() * (c as f32 * 0.2).sin();
                    out.push(0.01 * low + noise * rng.normal() as f32);
                }
            }
        }
        out
    }

    fn rel_error(a: &[f32], b: &[f32]) -> f64 {
        let err: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        (err / norm).sqrt()
    }

    #[test]
    fn every_codec_round_trips_conv_and_dense_tensors_within_its_error() {
        let layout = layout();
        let d = delta(&layout, 0.0);
        let cases = [
            (CodecDesc::Identity, 0.0),
            (CodecDesc::F16, 1e-3),
            (CodecDesc::Int8 { block: 64 }, 0.02),
            (
                CodecDesc::LowRank {
                    rank: 4,
                    power_iters: 2,
                    factor_bits: 32,
                },
                1e-3,
            ),
            (CodecDesc::Dct { keep_ppm: 500_000 }, 0.3),
            (CodecDesc::TopK { ratio_ppm: 100_000 }, 0.95),
        ];
        for (desc, tolerance) in cases {
            let mut encoder = UpdateEncoder::new(layout.clone(), desc).unwrap();
            let bytes = encoder.encode(&d).unwrap();
            let back = decode(desc, &layout, &bytes).unwrap();
            let err = rel_error(&d, &back);
            assert!(err <= tolerance, "{desc:?}: relative error {err}");
            // The bias (120 values) always travels raw.
            let bias = layout.range(2);
            assert_eq!(back[bias.clone()], d[bias], "{desc:?}");
            if !matches!(desc, CodecDesc::Identity | CodecDesc::Dct { .. }) {
                assert!(
                    bytes.len() < d.len() * 4 * 2 / 3,
                    "{desc:?}: {} bytes",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn top_k_error_feedback_delivers_what_was_held_back() {
        let layout = layout();
        let d = delta(&layout, 0.001);
        let desc = CodecDesc::TopK { ratio_ppm: 100_000 };
        let mut encoder = UpdateEncoder::new(layout.clone(), desc).unwrap();
        let mut sent = vec![0.0f32; d.len()];
        let rounds = 50;
        for _ in 0..rounds {
            let back = decode(desc, &layout, &encoder.encode(&d).unwrap()).unwrap();
            sent.iter_mut().zip(&back).for_each(|(s, b)| *s += b);
        }
        // Sent in all = rounds * d - residual, and the residual stays bounded: the mean
        // of what was sent approaches d, where one round of top-10% alone is far off.
        let mean: Vec<f32> = sent.iter().map(|s| s / rounds as f32).collect();
        let conv = layout.range(0);
        assert!(rel_error(&d[conv.clone()], &mean[conv]) < 0.35);
    }

    #[test]
    fn malformed_updates_are_refused_with_their_reason() {
        let layout = layout();
        let d = delta(&layout, 0.0);
        let mut encoder = UpdateEncoder::new(layout.clone(), CodecDesc::Identity).unwrap();
        let bytes = encoder.encode(&d).unwrap();
        assert_eq!(
            decode(CodecDesc::Identity, &layout, &bytes[..3]),
            Err(UpdateError::Truncated { tensor: 0 })
        );
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 5]);
        assert_eq!(
            decode(CodecDesc::Identity, &layout, &long),
            Err(UpdateError::Trailing(5))
        );
        // A length prefix pointing past the end.
        let mut lying = bytes.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(CodecDesc::Identity, &layout, &lying),
            Err(UpdateError::Truncated { tensor: 0 })
        );
        let mut nan = d.clone();
        nan[7] = f32::NAN;
        assert_eq!(encoder.encode(&nan), Err(UpdateError::NonFinite { at: 7 }));
        assert_eq!(
            encoder.encode(&d[1..]),
            Err(UpdateError::Length {
                expected: d.len(),
                got: d.len() - 1
            })
        );
        assert!(decode(CodecDesc::Identity, &layout, &[]).is_err());
    }
}
