//! NEON reductions: four 4-lane accumulators (16 floats per iteration) so consecutive
//! `fmax`/`fmla` do not wait on each other.

use crate::scalar;
use core::arch::aarch64::{
    float32x4_t, vabsq_f32, vaddq_f32, vaddvq_f32, vdupq_n_f32, vfmaq_f32, vld1q_f32, vmaxq_f32,
    vmaxvq_f32,
};

/// Loads 16 floats as four vectors.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load16(chunk: &[f32; 16]) -> [float32x4_t; 4] {
    let p = chunk.as_ptr();
    // SAFETY: `chunk` is 16 valid, initialised f32s, so p, p+4, p+8 and p+12 each start
    // 4 readable floats; vld1q_f32 has no alignment requirement beyond f32's.
    unsafe {
        [
            vld1q_f32(p),
            vld1q_f32(p.add(4)),
            vld1q_f32(p.add(8)),
            vld1q_f32(p.add(12)),
        ]
    }
}

/// See [`crate::reduce::absmax`]. `fmax` propagates NaN, matching the documented result.
pub(crate) fn absmax(x: &[f32]) -> f32 {
    // SAFETY: this module is only compiled with `target_feature = "neon"` enabled
    // (NEON is part of the aarch64 baseline), so every CPU this binary runs on has it.
    unsafe { absmax_neon(x) }
}

#[target_feature(enable = "neon")]
fn absmax_neon(x: &[f32]) -> f32 {
    #[cfg(test)]
    crate::trace::record(crate::Backend::Neon);
    let mut acc = [vdupq_n_f32(0.0); 4];
    let (chunks, tail) = x.as_chunks::<16>();
    for chunk in chunks {
        let v = load16(chunk);
        for lane in 0..4 {
            acc[lane] = vmaxq_f32(acc[lane], vabsq_f32(v[lane]));
        }
    }
    let m = vmaxq_f32(vmaxq_f32(acc[0], acc[1]), vmaxq_f32(acc[2], acc[3]));
    scalar::absmax_tail(vmaxvq_f32(m), tail)
}

/// See [`crate::reduce::sum_squares`].
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    // SAFETY: this module is only compiled with `target_feature = "neon"` enabled
    // (NEON is part of the aarch64 baseline), so every CPU this binary runs on has it.
    unsafe { sum_squares_neon(x) }
}

#[target_feature(enable = "neon")]
fn sum_squares_neon(x: &[f32]) -> f32 {
    #[cfg(test)]
    crate::trace::record(crate::Backend::Neon);
    let mut acc = [vdupq_n_f32(0.0); 4];
    let (chunks, tail) = x.as_chunks::<16>();
    for chunk in chunks {
        let v = load16(chunk);
        for lane in 0..4 {
            acc[lane] = vfmaq_f32(acc[lane], v[lane], v[lane]);
        }
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    scalar::sum_squares_tail(vaddvq_f32(s), tail)
}
