//! Tensor codecs for activations, cut gradients and model updates.
//!
//! Every codec has an [`Encoder`] (which may keep state across steps: the previous
//! step's `Q` for `LowRank`, the error-feedback residual for `TopK` and `Acp`) and a
//! stateless [`decode`] (`Acp`, whose factor is against one both sides share, encodes
//! with [`Encoder::encode_shared`] and decodes with [`decode_shared`]). An encode returns the bytes and a [`Report`]: bytes, ratio against f32,
//! and the relative error `||H - H'|| / ||H||` measured by decoding what was sent, so the
//! figure is honest whatever the codec does inside.
//!
//! Formats (all little-endian) are specified in `runtime/WIRE.md` "Tensor codecs". A
//! decoder checks the byte length against the shape before allocating, and refuses
//! truncated, oversized or inconsistent buffers and non-finite values with a typed
//! [`CodecError`]; shapes above [`MAX_ELEMENTS`] are refused outright.

mod acp;
mod choose;
mod error;
mod format;
mod lowrank;
mod topk;

pub use acp::{SharedFactor, Side};
pub use choose::{Target, choose, lowrank_ladder};
pub use error::CodecError;
pub use format::{encoded_len, max_encoded_len};

use crate::wire::CodecDesc;
use format::{Reader, Writer};
use tandem_kernels::dct;

/// The most elements a tensor may have (1 GiB of f32): a bound on what a decoder
/// allocates, whatever shape a peer announces.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Rows x columns of a row-major f32 matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Rows (e.g. batch x sequence).
    pub rows: usize,
    /// Columns (e.g. hidden size).
    pub cols: usize,
}

impl Shape {
    /// A `rows x cols` shape.
    pub const fn new(rows: usize, cols: usize) -> Self {
        Self { rows, cols }
    }

    /// `rows * cols`, or an error above [`MAX_ELEMENTS`].
    pub fn elements(self) -> Result<usize, CodecError> {
        self.rows
            .checked_mul(self.cols)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or(CodecError::ShapeTooLarge(self))
    }
}

/// What one encode achieved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    /// Encoded bytes.
    pub bytes: usize,
    /// f32 bytes / encoded bytes (infinite for an empty encoding of nothing).
    pub ratio: f64,
    /// `||H - decode(encode(H))|| / ||H||` (0 for an all-zero H decoded exactly).
    pub rel_error: f64,
}

impl Report {
    fn measure(h: &[f32], decoded: &[f32], bytes: usize) -> Self {
        let (mut err, mut norm) = (0.0f64, 0.0f64);
        for (&a, &b) in h.iter().zip(decoded) {
            err += f64::from(a - b).powi(2);
            norm += f64::from(a).powi(2);
        }
        let rel_error = if norm > 0.0 {
            (err / norm).sqrt()
        } else if err > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        Self {
            bytes,
            ratio: (h.len() * 4) as f64 / bytes as f64,
            rel_error,
        }
    }
}

/// An encoder's state between encodes: top-k's and ACP's residual, PowerSGD's warm-started `Q`
/// as `(rows, cols, rank, Q)` and the encodes done. Serialisable for checkpoints.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncoderMemory {
    /// Top-k's or ACP's error-feedback residual (empty for other codecs).
    pub residual: Vec<f32>,
    /// The last orthonormalised `Q` of a low-rank encoder.
    pub warm: Option<(usize, usize, usize, Vec<f32>)>,
    /// Low-rank encodes done (seeds a cold start).
    pub steps: u64,
}

/// The encoding side of one codec, with its state across steps.
#[derive(Clone, Debug)]
pub struct Encoder {
    desc: CodecDesc,
    lowrank: lowrank::State,
    topk: topk::State,
    /// Whether TopK carries what it did not send into the next encode.
    feedback: bool,
}

impl Encoder {
    /// An encoder for `desc` (checked: unsupported parameters are an error here, not at
    /// the first encode).
    pub fn new(desc: CodecDesc) -> Result<Self, CodecError> {
        format::check_desc(desc)?;
        Ok(Self {
            desc,
            lowrank: lowrank::State::default(),
            topk: topk::State::default(),
            feedback: true,
        })
    }

    /// An encoder for tensors that do not accumulate from one encode to the next (a
    /// batch's activations, its cut gradient): TopK sends each tensor's own largest
    /// entries and carries no residual into the next, unrelated, tensor. Error feedback
    /// belongs to sums (model updates), where what is held back is sent later.
    pub fn per_step(desc: CodecDesc) -> Result<Self, CodecError> {
        Ok(Self::new(desc)?.without_feedback())
    }

    /// A [`Self::per_step`] encoder that continues from `memory` (see [`Self::restore`]).
    pub fn restore_per_step(desc: CodecDesc, memory: EncoderMemory) -> Result<Self, CodecError> {
        Ok(Self::restore(desc, memory)?.without_feedback())
    }

    fn without_feedback(mut self) -> Self {
        self.feedback = false;
        self
    }

    /// The codec.
    pub fn desc(&self) -> CodecDesc {
        self.desc
    }

    /// What this encoder carries into its next encode, for a checkpoint.
    pub fn memory(&self) -> EncoderMemory {
        let (warm, steps) = self.lowrank.warm();
        EncoderMemory {
            residual: self.topk.residual().to_vec(),
            warm: warm.map(|(shape, rank, q)| (shape.rows, shape.cols, *rank, q.clone())),
            steps,
        }
    }

    /// An encoder for `desc` that continues from `memory` (as [`Self::memory`] gave it).
    /// The memory is checked against itself; a residual or warm start of the wrong size
    /// for the next tensor is dropped at that encode, as after a shape change.
    pub fn restore(desc: CodecDesc, memory: EncoderMemory) -> Result<Self, CodecError> {
        let mut encoder = Self::new(desc)?;
        if let Some((rows, cols, rank, q)) = memory.warm {
            let shape = Shape::new(rows, cols);
            if shape.elements().is_err() || cols.checked_mul(rank) != Some(q.len()) {
                return Err(CodecError::Inconsistent(
                    "checkpointed Q does not match its shape",
                ));
            }
            encoder.lowrank = lowrank::State::with_warm(Some((shape, rank, q)), memory.steps);
        }
        if memory.residual.iter().any(|v| !v.is_finite()) {
            return Err(CodecError::Inconsistent(
                "checkpointed residual is not finite",
            ));
        }
        encoder.topk = topk::State::with_residual(memory.residual);
        Ok(encoder)
    }

    /// Encodes `h` (`shape`, row-major) and reports on it (the error is measured by
    /// decoding what was sent). NaN or infinite input is refused before any state
    /// changes.
    pub fn encode(&mut self, h: &[f32], shape: Shape) -> Result<(Vec<u8>, Report), CodecError> {
        let bytes = self.encode_raw(h, shape)?;
        let decoded = decode(self.desc, shape, &bytes)?;
        self.sent(&decoded);
        let report = Report::measure(h, &decoded, bytes.len());
        Ok((bytes, report))
    }

    /// [`Encoder::encode`] without the report, for senders that do not use it: no
    /// decode, except for TopK, whose error feedback needs what was sent.
    pub fn encode_bytes(&mut self, h: &[f32], shape: Shape) -> Result<Vec<u8>, CodecError> {
        let bytes = self.encode_raw(h, shape)?;
        if let CodecDesc::TopK { .. } = self.desc
            && self.feedback
        {
            self.sent(&decode(self.desc, shape, &bytes)?);
        }
        Ok(bytes)
    }

    /// Encodes `h` (`shape`) against the round's `shared` factor (ACP, with error
    /// feedback); other codecs ignore `shared` and encode as [`Encoder::encode_bytes`].
    pub fn encode_shared(
        &mut self,
        h: &[f32],
        shape: Shape,
        shared: Option<&SharedFactor>,
    ) -> Result<Vec<u8>, CodecError> {
        let CodecDesc::Acp { rank, factor_bits } = self.desc else {
            return self.encode_bytes(h, shape);
        };
        let shared = shared.ok_or(CodecError::NeedsSharedFactor)?;
        check_input(h, shape)?;
        let rank = usize::from(rank);
        let m = self.topk.with_residual_added(h);
        let bytes = acp::encode(m, shape, shared, rank, factor_bits)?;
        let sent = acp::decode(&mut Reader::new(&bytes), shape, shared, rank, factor_bits)?;
        self.topk.sent(&sent);
        Ok(bytes)
    }

    /// Tells the stateful codecs what the receiver decodes.
    fn sent(&mut self, decoded: &[f32]) {
        if let CodecDesc::TopK { .. } = self.desc
            && self.feedback
        {
            self.topk.sent(decoded);
        }
    }

    /// The encoded bytes of `h`, input checked.
    fn encode_raw(&mut self, h: &[f32], shape: Shape) -> Result<Vec<u8>, CodecError> {
        check_input(h, shape)?;
        // The element-wise codecs write straight into a buffer of their exact size.
        let writer = || Writer::with_capacity(encoded_len(self.desc, shape).unwrap_or(0));
        let bytes = match self.desc {
            CodecDesc::Identity => {
                let mut w = writer();
                w.f32s(h);
                w.finish()
            }
            CodecDesc::F16 => {
                let mut w = writer();
                w.f16s(h)?;
                w.finish()
            }
            CodecDesc::Int8 { block } => {
                let mut w = writer();
                w.int8s(h, format::int8_block(block, shape))?;
                w.finish()
            }
            CodecDesc::LowRank {
                rank,
                power_iters,
                factor_bits,
            } => self
                .lowrank
                .encode(h, shape, usize::from(rank), power_iters, factor_bits)?,
            CodecDesc::TopK { ratio_ppm } => self.topk.encode(h, ratio_ppm)?,
            CodecDesc::Dct { keep_ppm } => encode_dct(h, keep_ppm)?,
            CodecDesc::Acp { .. } => return Err(CodecError::NeedsSharedFactor),
        };
        Ok(bytes)
    }
}

/// `h` has `shape`'s length and finite values.
fn check_input(h: &[f32], shape: Shape) -> Result<(), CodecError> {
    let len = shape.elements()?;
    if h.len() != len {
        return Err(CodecError::ShapeMismatch {
            shape,
            found: h.len(),
        });
    }
    if let Some(at) = h.iter().position(|v| !v.is_finite()) {
        return Err(CodecError::NonFinite { at });
    }
    Ok(())
}

/// Decodes `bytes` made by [`Encoder::encode_shared`] for `desc`, `shape` and the round's
/// `shared` factor (needed by ACP, ignored by the others).
pub fn decode_shared(
    desc: CodecDesc,
    shape: Shape,
    bytes: &[u8],
    shared: Option<&SharedFactor>,
) -> Result<Vec<f32>, CodecError> {
    let CodecDesc::Acp { rank, factor_bits } = desc else {
        return decode(desc, shape, bytes);
    };
    format::check_desc(desc)?;
    shape.elements()?;
    let shared = shared.ok_or(CodecError::NeedsSharedFactor)?;
    let rank = usize::from(rank);
    let expected = acp::encoded_len(shape, rank, factor_bits, shared.side);
    if bytes.len() != expected {
        return Err(CodecError::Inconsistent("ACP factor of the wrong length"));
    }
    let mut r = Reader::new(bytes);
    let out = acp::decode(&mut r, shape, shared, rank, factor_bits)?;
    r.end()?;
    all_finite(out)
}

/// `values`, or the first non-finite one's index: finite factors and scales can still
/// multiply past f32's range (the codec_decode fuzz target found a low-rank product that
/// did), and no decoder hands a peer's infinity to the model or to an aggregate.
fn all_finite(values: Vec<f32>) -> Result<Vec<f32>, CodecError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(at) => Err(CodecError::NonFinite { at }),
        None => Ok(values),
    }
}

/// Decodes `bytes` made by an [`Encoder`] for `desc` and `shape`.
pub fn decode(desc: CodecDesc, shape: Shape, bytes: &[u8]) -> Result<Vec<f32>, CodecError> {
    format::check_desc(desc)?;
    let len = shape.elements()?;
    // The exact size is known for every codec but TopK, whose bound is checked inside.
    if let Some(expected) = encoded_len(desc, shape)
        && bytes.len() != expected
    {
        return Err(if bytes.len() < expected {
            CodecError::Truncated {
                expected,
                found: bytes.len(),
            }
        } else {
            CodecError::Oversized {
                expected,
                found: bytes.len(),
            }
        });
    }
    let mut r = Reader::new(bytes);
    let out = match desc {
        CodecDesc::Identity => r.f32s(len)?,
        CodecDesc::F16 => r.f16s(len)?,
        CodecDesc::Int8 { block } => r.int8s(len, format::int8_block(block, shape))?,
        CodecDesc::LowRank {
            rank, factor_bits, ..
        } => lowrank::decode(&mut r, shape, usize::from(rank), factor_bits)?,
        CodecDesc::TopK { ratio_ppm } => topk::decode(&mut r, len, ratio_ppm)?,
        CodecDesc::Dct { keep_ppm } => decode_dct(&mut r, len, keep_ppm)?,
        CodecDesc::Acp { .. } => return Err(CodecError::NeedsSharedFactor),
    };
    r.end()?;
    all_finite(out)
}

/// DCT blocks of this many values (flattened, the last block zero-padded).
pub const DCT_BLOCK: usize = 64;

/// Coefficients kept per DCT block: the lowest frequencies.
fn dct_keep(keep_ppm: u32) -> usize {
    ((DCT_BLOCK as u64 * u64::from(keep_ppm)).div_ceil(1_000_000) as usize).clamp(1, DCT_BLOCK)
}

fn encode_dct(h: &[f32], keep_ppm: u32) -> Result<Vec<u8>, CodecError> {
    let keep = dct_keep(keep_ppm);
    let mut padded = h.to_vec();
    padded.resize(h.len().div_ceil(DCT_BLOCK) * DCT_BLOCK, 0.0);
    dct::dct2_blocks(&mut padded, DCT_BLOCK)?;
    let mut w = Writer::with_capacity(padded.len() / DCT_BLOCK * keep * 4);
    for block in padded.chunks_exact(DCT_BLOCK) {
        w.f32s(&block[..keep]);
    }
    Ok(w.finish())
}

fn decode_dct(r: &mut Reader, len: usize, keep_ppm: u32) -> Result<Vec<f32>, CodecError> {
    let keep = dct_keep(keep_ppm);
    let blocks = len.div_ceil(DCT_BLOCK);
    let mut out = vec![0.0; blocks * DCT_BLOCK];
    for block in out.chunks_exact_mut(DCT_BLOCK) {
        block[..keep].copy_from_slice(&r.f32s(keep)?);
    }
    dct::dct3_blocks(&mut out, DCT_BLOCK)?;
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests;
