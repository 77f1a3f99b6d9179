//! SSE2 int8 quantisation mirroring `arch/aarch64/quant.rs`, 16 values per step:
//! multiply, clamp, `cvtps2dq` (round to nearest even: the default MXCSR mode, which
//! Rust code runs under) and two saturating packs; the inverse sign-extends by
//! unpack-and-shift (SSE2 has no `pmovsx`) and converts. Results are bit-identical to
//! the scalar loops in `crate::scalar`.

use super::reduce::load16;
use crate::scalar;
use core::arch::x86_64::{
    __m128i, _mm_cvtepi32_ps, _mm_cvtps_epi32, _mm_loadu_si128, _mm_max_ps, _mm_min_ps, _mm_mul_ps,
    _mm_packs_epi16, _mm_packs_epi32, _mm_set1_ps, _mm_srai_epi16, _mm_srai_epi32, _mm_storeu_ps,
    _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpackhi_epi16, _mm_unpacklo_epi8, _mm_unpacklo_epi16,
};

/// See [`crate::scalar::quantize_nearest`].
pub(crate) fn quantize_nearest(x: &[f32], inv: f32, codes: &mut [i8]) {
    // SAFETY: this module is only compiled with `target_feature = "sse2"` enabled
    // (SSE2 is part of the x86_64 baseline), so every CPU this binary runs on has it.
    unsafe { quantize_nearest_sse2(x, inv, codes) }
}

#[target_feature(enable = "sse2")]
fn quantize_nearest_sse2(x: &[f32], inv: f32, codes: &mut [i8]) {
    let n = x.len().min(codes.len());
    let (src, x_tail) = x[..n].as_chunks::<16>();
    let (dst, c_tail) = codes[..n].as_chunks_mut::<16>();
    let (k, lo, hi) = (_mm_set1_ps(inv), _mm_set1_ps(-127.0), _mm_set1_ps(127.0));
    for (s, d) in src.iter().zip(dst) {
        let v = load16(s);
        let mut q = [_mm_cvtps_epi32(lo); 4];
        for lane in 0..4 {
            q[lane] = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_mul_ps(v[lane], k), lo), hi));
        }
        let b = _mm_packs_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
        // SAFETY: `d` is 16 writable bytes; _mm_storeu_si128 has no alignment requirement.
        unsafe { _mm_storeu_si128(d.as_mut_ptr().cast::<__m128i>(), b) }
    }
    scalar::quantize_nearest(x_tail, inv, c_tail);
}

/// `out[i] = codes[i] * scales[i / block]` (see [`crate::scalar::dequantize`]); the
/// loop over blocks runs inside the kernel, so short blocks cost no call each.
pub(crate) fn dequantize(codes: &[i8], scales: &[f32], block: usize, out: &mut [f32]) {
    // SAFETY: as for `quantize_nearest`: SSE2 is baseline on x86_64.
    unsafe { dequantize_sse2(codes, scales, block, out) }
}

#[target_feature(enable = "sse2")]
fn dequantize_sse2(codes: &[i8], scales: &[f32], block: usize, out: &mut [f32]) {
    let blocks = codes.chunks(block.max(1)).zip(out.chunks_mut(block.max(1)));
    for ((cb, ob), &scale) in blocks.zip(scales) {
        dequantize_block(cb, scale, ob);
    }
}

/// One block of [`dequantize`].
#[inline]
#[target_feature(enable = "sse2")]
fn dequantize_block(codes: &[i8], scale: f32, out: &mut [f32]) {
    let n = codes.len().min(out.len());
    let (src, c_tail) = codes[..n].as_chunks::<16>();
    let (dst, o_tail) = out[..n].as_chunks_mut::<16>();
    let s = _mm_set1_ps(scale);
    for (c, o) in src.iter().zip(dst) {
        // SAFETY: `c` is 16 readable bytes; _mm_loadu_si128 has no alignment requirement.
        let b = unsafe { _mm_loadu_si128(c.as_ptr().cast::<__m128i>()) };
        // Each byte paired with itself, shifted right arithmetically: sign extension.
        let lo = _mm_srai_epi16::<8>(_mm_unpacklo_epi8(b, b));
        let hi = _mm_srai_epi16::<8>(_mm_unpackhi_epi8(b, b));
        let w = [
            _mm_srai_epi32::<16>(_mm_unpacklo_epi16(lo, lo)),
            _mm_srai_epi32::<16>(_mm_unpackhi_epi16(lo, lo)),
            _mm_srai_epi32::<16>(_mm_unpacklo_epi16(hi, hi)),
            _mm_srai_epi32::<16>(_mm_unpackhi_epi16(hi, hi)),
        ];
        for (lane, &wi) in w.iter().enumerate() {
            let f = _mm_mul_ps(_mm_cvtepi32_ps(wi), s);
            // SAFETY: `o` is 16 writable f32s, so `o[4 lane..]` has 4; unaligned store.
            unsafe { _mm_storeu_ps(o.as_mut_ptr().add(4 * lane), f) }
        }
    }
    scalar::dequantize(c_tail, scale, o_tail);
}
