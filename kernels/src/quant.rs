//! Quantisation: f32 -> int8 with one scale per block (a row, or 64 elements), f32 <->
//! IEEE half precision, optional stochastic rounding, and the inverses.
//!
//! Guarantees:
//! - int8: `scale = absmax(block) / 127`, codes in `-127..=127` (never -128, so the code
//!   range is symmetric); round-to-nearest error is at most `scale / 2` per element,
//!   stochastic rounding is unbiased with error below `scale`. An all-zero block has
//!   scale 0 and decodes to zeros.
//! - f16: round to nearest, ties to even; overflow gives infinity, NaN stays NaN,
//!   subnormals are kept.
//! - Inputs must be finite for int8 (a NaN or infinite block is refused with
//!   [`KernelError::OutOfRange`]), so a corrupt tensor is never silently encoded.
//!
//! Round-to-nearest int8 and its inverse run 16 values per step on NEON and on the
//! SSE2 mirror (`arch/*/quant.rs`), bit-identical to the scalar loops in
//! `crate::scalar`; stochastic rounding and f16 are scalar.

use crate::KernelError;
use crate::reduce::absmax;

/// How values between two codes are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// To the nearest code.
    Nearest,
    /// Up or down at random with probability proportional to the distance: unbiased.
    /// The seed makes it reproducible.
    Stochastic {
        /// Generator seed.
        seed: u64,
    },
}

/// Number of scales for `len` elements in blocks of `block`.
pub fn block_count(len: usize, block: usize) -> usize {
    len.div_ceil(block.max(1))
}

/// Quantises `x` to int8 codes with one scale per `block` consecutive elements (the
/// last block may be shorter). `codes` must have `x.len()` entries and `scales`
/// [`block_count`] entries.
pub fn quantize_i8(
    x: &[f32],
    block: usize,
    rounding: Rounding,
    codes: &mut [i8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    check_block(block)?;
    KernelError::check_len("codes", codes.len(), x.len())?;
    KernelError::check_len("scales", scales.len(), block_count(x.len(), block))?;
    let mut rng = match rounding {
        Rounding::Nearest => None,
        Rounding::Stochastic { seed } => Some(seed ^ 0x2545_f491_4f6c_dd1d | 1),
    };
    for ((xb, cb), scale) in x.chunks(block).zip(codes.chunks_mut(block)).zip(scales) {
        let max = absmax(xb);
        if !max.is_finite() {
            return Err(KernelError::OutOfRange {
                name: "input",
                value: format!("{max}"),
                range: "finite values",
            });
        }
        *scale = max / 127.0;
        if max == 0.0 {
            cb.fill(0);
            continue;
        }
        let inv = 127.0 / max;
        match &mut rng {
            None => quantize_nearest(xb, inv, cb),
            Some(state) => {
                for (c, &v) in cb.iter_mut().zip(xb) {
                    *state ^= *state << 13;
                    *state ^= *state >> 7;
                    *state ^= *state << 17;
                    let u = (*state >> 40) as f32 / (1u64 << 24) as f32;
                    *c = (v * inv + u).floor().clamp(-127.0, 127.0) as i8;
                }
            }
        }
    }
    Ok(())
}

/// The inverse of [`quantize_i8`]: `out[i] = codes[i] * scale of its block`.
pub fn dequantize_i8(
    codes: &[i8],
    scales: &[f32],
    block: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_block(block)?;
    KernelError::check_len("out", out.len(), codes.len())?;
    KernelError::check_len("scales", scales.len(), block_count(codes.len(), block))?;
    dequantize(codes, scales, block, out);
    Ok(())
}

/// Codes of `x * inv`, nearest, clamped to `-127..=127`, on this target's backend.
fn quantize_nearest(x: &[f32], inv: f32, codes: &mut [i8]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::quant::quantize_nearest(x, inv, codes);
    #[cfg(tandem_sse2)]
    return crate::arch::x86_64::quant::quantize_nearest(x, inv, codes);
    #[allow(unreachable_code)]
    crate::scalar::quantize_nearest(x, inv, codes)
}

/// `out[i] = codes[i] * scales[i / block]` on this target's backend (`block >= 1`).
fn dequantize(codes: &[i8], scales: &[f32], block: usize, out: &mut [f32]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::quant::dequantize(codes, scales, block, out);
    #[cfg(tandem_sse2)]
    return crate::arch::x86_64::quant::dequantize(codes, scales, block, out);
    #[allow(unreachable_code)]
    for ((cb, ob), &scale) in codes.chunks(block).zip(out.chunks_mut(block)).zip(scales) {
        crate::scalar::dequantize(cb, scale, ob);
    }
}

/// Converts `x` to IEEE binary16 bit patterns (round to nearest, ties to even).
pub fn f32_to_f16(x: &[f32], out: &mut [u16]) -> Result<(), KernelError> {
    KernelError::check_len("out", out.len(), x.len())?;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = half_from_f32(v);
    }
    Ok(())
}

/// Converts binary16 bit patterns to f32 (exact).
pub fn f16_to_f32(h: &[u16], out: &mut [f32]) -> Result<(), KernelError> {
    KernelError::check_len("out", out.len(), h.len())?;
    for (o, &v) in out.iter_mut().zip(h) {
        *o = f32_from_half(v);
    }
    Ok(())
}

/// `block` must be at least 1.
pub(crate) fn check_block(block: usize) -> Result<(), KernelError> {
    if block == 0 {
        return Err(KernelError::OutOfRange {
            name: "block",
            value: "0".into(),
            range: "1..",
        });
    }
    Ok(())
}

/// f32 -> binary16, round to nearest even, branch-light.
#[inline]
pub(crate) fn half_from_f32(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x007f_ffff;
    if exp == 0xff {
        // Inf or NaN (keep NaN quiet and non-zero).
        return sign
            | 0x7c00
            | if mant != 0 {
                0x0200 | (mant >> 13) as u16
            } else {
                0
            };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal half (or zero): shift the implicit-one mantissa into place.
        if e < -10 {
            return sign;
        }
        let m = mant | 0x0080_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1u32 << shift) - 1);
        let mut h = m >> shift;
        if rest > half || (rest == half && h & 1 == 1) {
            h += 1;
        }
        return sign | h as u16;
    }
    let mut h = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        // May carry into the exponent, up to infinity: exactly right.
        h += 1;
    }
    sign | h as u16
}

/// binary16 -> f32 (exact).
#[inline]
pub(crate) fn f32_from_half(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x03ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m * 2^-24, exactly representable in f32.
            let v = m as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn f16_matches_known_values_and_roundtrips_every_half() {
        for (v, h) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00), // rounds to infinity
            (f32::INFINITY, 0x7c00),
            (5.960_464_5e-8, 0x0001), // smallest subnormal
            (1.000_488_3, 0x3c00),    // tie, to even
            (1.001_464_8, 0x3c02),    // tie, to even (up)
        ] {
            assert_eq!(half_from_f32(v), h, "{v}");
        }
        assert!(f32_from_half(half_from_f32(f32::NAN)).is_nan());
        for h in 0..=u16::MAX {
            let v = f32_from_half(h);
            if !v.is_nan() {
                assert_eq!(half_from_f32(v), h, "{h:#06x}");
            }
        }
    }

    proptest! {
        #[test]
        fn int8_roundtrip_error_is_within_half_a_step(x in proptest::collection::vec(-1e3f32..1e3, 0..300), block in 1usize..100) {
            let mut codes = vec![0i8; x.len()];
            let mut scales = vec![0.0; block_count(x.len(), block)];
            quantize_i8(&x, block, Rounding::Nearest, &mut codes, &mut scales).unwrap();
            let mut back = vec![0.0; x.len()];
            dequantize_i8(&codes, &scales, block, &mut back).unwrap();
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                let scale = scales[i / block];
                prop_assert!((a - b).abs() <= scale * 0.5 + scale * 1e-5, "{} vs {}", a, b);
            }
            prop_assert!(codes.iter().all(|&c| c != -128));
        }
    }

    proptest! {
        #[test]
        fn simd_codes_match_the_scalar_loops_bit_for_bit(
            x in proptest::collection::vec(-2e3f32..2e3, 0..200),
            inv in 0.01f32..2.0,
            scale in 0.0f32..10.0,
        ) {
            // Includes ties (x * inv = k + 0.5 for some draws) and clamped values.
            let mut simd = vec![0i8; x.len()];
            let mut plain = vec![0i8; x.len()];
            quantize_nearest(&x, inv, &mut simd);
            crate::scalar::quantize_nearest(&x, inv, &mut plain);
            prop_assert_eq!(&simd, &plain);
            let mut back = vec![0.0f32; x.len()];
            let mut back_plain = vec![0.0f32; x.len()];
            dequantize(&simd, &[scale], simd.len().max(1), &mut back);
            crate::scalar::dequantize(&plain, scale, &mut back_plain);
            prop_assert_eq!(
                back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                back_plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn ties_round_to_even_and_extremes_clamp() {
        let x: Vec<f32> = [
            0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.4, -127.6, 300.0, -300.0,
        ]
        .into_iter()
        .cycle()
        .take(33) // two SIMD steps and a tail
        .collect();
        let mut codes = vec![0i8; x.len()];
        quantize_nearest(&x, 1.0, &mut codes);
        let want: [i8; 11] = [0, 2, 2, 0, -2, -2, 126, 127, -127, 127, -127];
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(c, want[i % 11], "x = {}", x[i]);
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let x = vec![0.3f32; 10_000];
        let mut with_max = x.clone();
        with_max.push(127.0); // scale 1: 0.3 lies between codes 0 and 1
        let mut codes = vec![0i8; with_max.len()];
        let mut scales = vec![0.0; 1];
        quantize_i8(
            &with_max,
            with_max.len(),
            Rounding::Stochastic { seed: 3 },
            &mut codes,
            &mut scales,
        )
        .unwrap();
        let mean = codes[..10_000].iter().map(|&c| f64::from(c)).sum::<f64>() / 10_000.0;
        assert!((mean - 0.3).abs() < 0.02, "mean {mean}");
        assert!(codes[..10_000].iter().all(|&c| c == 0 || c == 1));
    }

    #[test]
    fn non_finite_input_and_bad_lengths_are_errors() {
        let mut codes = [0i8; 3];
        let mut scales = [0.0; 1];
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(matches!(
                quantize_i8(
                    &[1.0, bad, 2.0],
                    3,
                    Rounding::Nearest,
                    &mut codes,
                    &mut scales
                ),
                Err(KernelError::OutOfRange { name: "input", .. })
            ));
        }
        assert!(quantize_i8(&[1.0; 3], 2, Rounding::Nearest, &mut codes, &mut scales).is_err());
        assert!(quantize_i8(&[1.0; 3], 0, Rounding::Nearest, &mut codes, &mut scales).is_err());
        let zeros = [0.0f32; 3];
        quantize_i8(&zeros, 3, Rounding::Nearest, &mut codes, &mut scales).unwrap();
        assert_eq!((codes, scales), ([0; 3], [0.0]));
    }
}
