//! Byte layouts shared by the codecs: little-endian f32, f16 and block-scaled int8
//! sections, exact sizes, and parameter checks.

use super::{CodecError, DCT_BLOCK, Shape};
use crate::wire::CodecDesc;
use tandem_kernels::quant::{self, Rounding};

/// Entries per scale of an int8-coded low-rank factor.
pub(super) const FACTOR_BLOCK: usize = 64;

/// Refuses parameters this build does not implement.
pub(super) fn check_desc(desc: CodecDesc) -> Result<(), CodecError> {
    let ok = match desc {
        CodecDesc::Identity | CodecDesc::F16 | CodecDesc::Int8 { .. } => true,
        CodecDesc::LowRank {
            rank,
            power_iters,
            factor_bits,
        } => {
            (1..=tandem_kernels::linalg::MAX_RANK as u16).contains(&rank)
                && power_iters <= 16
                && matches!(factor_bits, 8 | 16 | 32)
        }
        CodecDesc::TopK { ratio_ppm } => ratio_ppm <= 1_000_000,
        CodecDesc::Dct { keep_ppm } => keep_ppm <= 1_000_000,
        CodecDesc::Acp { rank, factor_bits } => {
            (1..=tandem_kernels::linalg::MAX_RANK as u16).contains(&rank)
                && matches!(factor_bits, 8 | 16 | 32)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(CodecError::Unsupported(desc))
    }
}

/// Values per int8 scale: `block`, or one row when `block` is 0.
pub(super) fn int8_block(block: u16, shape: Shape) -> usize {
    match block {
        0 => shape.cols.max(1),
        b => usize::from(b),
    }
}

/// The rank actually used for `shape`: at most min(rows, cols).
pub(super) fn effective_rank(rank: usize, shape: Shape) -> usize {
    rank.min(shape.rows).min(shape.cols)
}

/// Bytes of `len` factor entries at `bits`.
pub(super) fn factor_len(len: usize, bits: u8) -> usize {
    match bits {
        32 => len * 4,
        16 => len * 2,
        _ => len + len.div_ceil(FACTOR_BLOCK) * 4,
    }
}

/// Exact encoded size of a `shape` tensor, for every codec but `TopK` (whose
/// delta-coded indices vary; `None`), `Acp` (which depends on the round's shared side;
/// `None`) and unsupported ones (`None`).
pub fn encoded_len(desc: CodecDesc, shape: Shape) -> Option<usize> {
    check_desc(desc).ok()?;
    let len = shape.elements().ok()?;
    Some(match desc {
        CodecDesc::Identity => len * 4,
        CodecDesc::F16 => len * 2,
        CodecDesc::Int8 { block } => len + len.div_ceil(int8_block(block, shape)) * 4,
        CodecDesc::LowRank {
            rank, factor_bits, ..
        } => {
            let r = effective_rank(usize::from(rank), shape);
            factor_len(shape.rows * r, factor_bits) + factor_len(shape.cols * r, factor_bits)
        }
        CodecDesc::Dct { keep_ppm } => len.div_ceil(DCT_BLOCK) * super::dct_keep(keep_ppm) * 4,
        CodecDesc::TopK { .. } | CodecDesc::Acp { .. } => return None,
    })
}

/// The most bytes an encoded `shape` tensor can take: [`encoded_len`], or for `TopK`
/// its `k` entries at the longest index gap (5 varint bytes) and 4 bytes each; `None`
/// for `Acp` (its size depends on the round's shared side) and unsupported codecs. A
/// receiver refuses a larger payload before reading it.
pub fn max_encoded_len(desc: CodecDesc, shape: Shape) -> Option<usize> {
    match desc {
        CodecDesc::TopK { ratio_ppm } => {
            check_desc(desc).ok()?;
            let k = super::topk::count(shape.elements().ok()?, ratio_ppm);
            Some(k * super::topk::MAX_ENTRY_BYTES)
        }
        _ => encoded_len(desc, shape),
    }
}

/// Appends sections to an encoded tensor.
pub(super) struct Writer(Vec<u8>);

impl Writer {
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    pub(super) fn f32s(&mut self, x: &[f32]) {
        for v in x {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Half precision; magnitudes above 65504 saturate (never infinity).
    pub(super) fn f16s(&mut self, x: &[f32]) -> Result<(), CodecError> {
        let clamped: Vec<f32> = x.iter().map(|v| v.clamp(-65504.0, 65504.0)).collect();
        let mut half = vec![0u16; x.len()];
        quant::f32_to_f16(&clamped, &mut half)?;
        for h in half {
            self.0.extend_from_slice(&h.to_le_bytes());
        }
        Ok(())
    }

    /// Scales (one f32 per block) then codes.
    pub(super) fn int8s(&mut self, x: &[f32], block: usize) -> Result<(), CodecError> {
        let mut codes = vec![0i8; x.len()];
        let mut scales = vec![0.0; quant::block_count(x.len(), block)];
        quant::quantize_i8(x, block, Rounding::Nearest, &mut codes, &mut scales)?;
        self.f32s(&scales);
        self.0.extend(codes.iter().map(|&c| c as u8));
        Ok(())
    }

    /// A factor at `bits` per entry.
    pub(super) fn factor(&mut self, x: &[f32], bits: u8) -> Result<(), CodecError> {
        match bits {
            32 => self.f32s(x),
            16 => self.f16s(x)?,
            _ => self.int8s(x, FACTOR_BLOCK)?,
        }
        Ok(())
    }

    /// An unsigned LEB128 varint.
    pub(super) fn varint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads sections of an encoded tensor, refusing short or inconsistent input.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(CodecError::Truncated {
                expected: self.at.saturating_add(n),
                found: self.bytes.len(),
            });
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// `n` finite f32s.
    pub(super) fn f32s(&mut self, n: usize) -> Result<Vec<f32>, CodecError> {
        let raw = self.take(n.checked_mul(4).ok_or(CodecError::Inconsistent("length"))?)?;
        let out: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if out.iter().any(|v| !v.is_finite()) {
            return Err(CodecError::Inconsistent("non-finite value"));
        }
        Ok(out)
    }

    /// `n` finite halves.
    pub(super) fn f16s(&mut self, n: usize) -> Result<Vec<f32>, CodecError> {
        let raw = self.take(n.checked_mul(2).ok_or(CodecError::Inconsistent("length"))?)?;
        let half: Vec<u16> = raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut out = vec![0.0; n];
        quant::f16_to_f32(&half, &mut out)?;
        if out.iter().any(|v| !v.is_finite()) {
            return Err(CodecError::Inconsistent("non-finite value"));
        }
        Ok(out)
    }

    /// `n` int8 values in blocks of `block`: scales then codes, checked (finite,
    /// non-negative scales; no -128 code) but not dequantised.
    pub(super) fn int8_codes(
        &mut self,
        n: usize,
        block: usize,
    ) -> Result<(Vec<i8>, Vec<f32>), CodecError> {
        let scales = self.f32s(quant::block_count(n, block))?;
        if scales.iter().any(|&s| s < 0.0) {
            return Err(CodecError::Inconsistent("negative scale"));
        }
        let codes: Vec<i8> = self.take(n)?.iter().map(|&b| b as i8).collect();
        if codes.contains(&i8::MIN) {
            return Err(CodecError::Inconsistent("int8 code -128"));
        }
        Ok((codes, scales))
    }

    /// `n` int8 values in blocks of `block`: scales then codes.
    pub(super) fn int8s(&mut self, n: usize, block: usize) -> Result<Vec<f32>, CodecError> {
        let (codes, scales) = self.int8_codes(n, block)?;
        let mut out = vec![0.0; n];
        quant::dequantize_i8(&codes, &scales, block, &mut out)?;
        Ok(out)
    }

    /// A factor of `n` entries at `bits`.
    pub(super) fn factor(&mut self, n: usize, bits: u8) -> Result<Vec<f32>, CodecError> {
        match bits {
            32 => self.f32s(n),
            16 => self.f16s(n),
            _ => self.int8s(n, FACTOR_BLOCK),
        }
    }

    /// An unsigned LEB128 varint of at most 5 bytes, canonical (no trailing zero groups).
    pub(super) fn varint(&mut self) -> Result<u32, CodecError> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if (i > 0 && b == 0) || v > u64::from(u32::MAX) {
                    return Err(CodecError::Inconsistent("non-canonical varint"));
                }
                return Ok(v as u32);
            }
        }
        Err(CodecError::Inconsistent("varint longer than 5 bytes"))
    }

    /// All bytes must have been read.
    pub(super) fn end(&self) -> Result<(), CodecError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(CodecError::Oversized {
                expected: self.at,
                found: self.bytes.len(),
            })
        }
    }
}
