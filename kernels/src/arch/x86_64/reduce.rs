//! SSE2 reductions mirroring `arch/aarch64/reduce.rs`: four 4-lane accumulators.
//!
//! `maxps` is not NaN-propagating (it returns its second operand when either is NaN),
//! so NaN is tracked in a separate unordered-compare mask to match NEON's `fmax`.

use crate::scalar;
use core::arch::x86_64::{
    __m128, _mm_add_ps, _mm_andnot_ps, _mm_cmpunord_ps, _mm_cvtss_f32, _mm_loadu_ps, _mm_max_ps,
    _mm_movehl_ps, _mm_movemask_ps, _mm_mul_ps, _mm_or_ps, _mm_set1_ps, _mm_setzero_ps,
    _mm_shuffle_ps,
};

/// Loads 16 floats as four vectors.
#[inline]
#[target_feature(enable = "sse2")]
pub(super) fn load16(chunk: &[f32; 16]) -> [__m128; 4] {
    let p = chunk.as_ptr();
    // SAFETY: `chunk` is 16 valid, initialised f32s, so p, p+4, p+8 and p+12 each start
    // 4 readable floats; _mm_loadu_ps has no alignment requirement.
    unsafe {
        [
            _mm_loadu_ps(p),
            _mm_loadu_ps(p.add(4)),
            _mm_loadu_ps(p.add(8)),
            _mm_loadu_ps(p.add(12)),
        ]
    }
}

/// Horizontal max of 4 lanes (inputs are NaN-free here).
#[inline]
#[target_feature(enable = "sse2")]
fn hmax(v: __m128) -> f32 {
    let hi = _mm_movehl_ps(v, v);
    let m = _mm_max_ps(v, hi);
    let m = _mm_max_ps(m, _mm_shuffle_ps::<0b01>(m, m));
    _mm_cvtss_f32(m)
}

/// Horizontal sum of 4 lanes as (0+2)+(1+3). NEON's `faddv` pairs (0+1)+(2+3), so the
/// last bit of a sum may differ between the two backends.
#[inline]
#[target_feature(enable = "sse2")]
fn hsum(v: __m128) -> f32 {
    let hi = _mm_movehl_ps(v, v);
    let s = _mm_add_ps(v, hi);
    let s = _mm_add_ps(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// See [`crate::reduce::absmax`].
pub(crate) fn absmax(x: &[f32]) -> f32 {
    // SAFETY: this module is only compiled with `target_feature = "sse2"` enabled
    // (SSE2 is part of the x86_64 baseline), so every CPU this binary runs on has it.
    unsafe { absmax_sse2(x) }
}

#[target_feature(enable = "sse2")]
fn absmax_sse2(x: &[f32]) -> f32 {
    #[cfg(test)]
    crate::trace::record(crate::Backend::Sse2);
    let sign = _mm_set1_ps(-0.0);
    let mut acc = [_mm_setzero_ps(); 4];
    let mut nan = _mm_setzero_ps();
    let (chunks, tail) = x.as_chunks::<16>();
    for chunk in chunks {
        let v = load16(chunk);
        for lane in 0..4 {
            nan = _mm_or_ps(nan, _mm_cmpunord_ps(v[lane], v[lane]));
            acc[lane] = _mm_max_ps(acc[lane], _mm_andnot_ps(sign, v[lane]));
        }
    }
    if _mm_movemask_ps(nan) != 0 {
        return f32::NAN;
    }
    let m = _mm_max_ps(_mm_max_ps(acc[0], acc[1]), _mm_max_ps(acc[2], acc[3]));
    scalar::absmax_tail(hmax(m), tail)
}

/// See [`crate::reduce::sum_squares`]. Uses mul + add (SSE2 has no FMA), so the last
/// bit may differ from the NEON `fmla` result.
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    // SAFETY: this module is only compiled with `target_feature = "sse2"` enabled
    // (SSE2 is part of the x86_64 baseline), so every CPU this binary runs on has it.
    unsafe { sum_squares_sse2(x) }
}

#[target_feature(enable = "sse2")]
fn sum_squares_sse2(x: &[f32]) -> f32 {
    #[cfg(test)]
    crate::trace::record(crate::Backend::Sse2);
    let mut acc = [_mm_setzero_ps(); 4];
    let (chunks, tail) = x.as_chunks::<16>();
    for chunk in chunks {
        let v = load16(chunk);
        for lane in 0..4 {
            acc[lane] = _mm_add_ps(acc[lane], _mm_mul_ps(v[lane], v[lane]));
        }
    }
    let s = _mm_add_ps(_mm_add_ps(acc[0], acc[1]), _mm_add_ps(acc[2], acc[3]));
    scalar::sum_squares_tail(hsum(s), tail)
}
