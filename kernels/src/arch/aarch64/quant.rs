//! NEON int8 quantisation, 16 values per step: multiply, clamp, `fcvtns` (round to
//! nearest, ties to even) and two saturating narrows; the inverse widens twice and
//! converts. Results are bit-identical to the scalar loops in `crate::scalar`.

use super::reduce::load16;
use crate::scalar;
use core::arch::aarch64::{
    vcombine_s8, vcombine_s16, vcvtnq_s32_f32, vcvtq_f32_s32, vdupq_n_f32, vget_low_s8,
    vget_low_s16, vld1q_s8, vmaxq_f32, vminq_f32, vmovl_high_s8, vmovl_high_s16, vmovl_s8,
    vmovl_s16, vmulq_f32, vqmovn_s16, vqmovn_s32, vst1q_f32, vst1q_s8,
};

/// See [`crate::scalar::quantize_nearest`].
pub(crate) fn quantize_nearest(x: &[f32], inv: f32, codes: &mut [i8]) {
    // SAFETY: this module is only compiled with `target_feature = "neon"` enabled
    // (NEON is part of the aarch64 baseline), so every CPU this binary runs on has it.
    unsafe { quantize_nearest_neon(x, inv, codes) }
}

#[target_feature(enable = "neon")]
fn quantize_nearest_neon(x: &[f32], inv: f32, codes: &mut [i8]) {
    let n = x.len().min(codes.len());
    let (src, x_tail) = x[..n].as_chunks::<16>();
    let (dst, c_tail) = codes[..n].as_chunks_mut::<16>();
    let (k, lo, hi) = (vdupq_n_f32(inv), vdupq_n_f32(-127.0), vdupq_n_f32(127.0));
    for (s, d) in src.iter().zip(dst) {
        let v = load16(s);
        let mut q = [vcvtnq_s32_f32(vdupq_n_f32(0.0)); 4];
        for lane in 0..4 {
            let y = vminq_f32(vmaxq_f32(vmulq_f32(v[lane], k), lo), hi);
            q[lane] = vcvtnq_s32_f32(y);
        }
        let h0 = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
        let h1 = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
        let b = vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
        // SAFETY: `d` is 16 writable i8s; vst1q_s8 has no alignment requirement.
        unsafe { vst1q_s8(d.as_mut_ptr(), b) }
    }
    scalar::quantize_nearest(x_tail, inv, c_tail);
}

/// `out[i] = codes[i] * scales[i / block]` (see [`crate::scalar::dequantize`]); the
/// loop over blocks runs inside the kernel, so short blocks cost no call each.
pub(crate) fn dequantize(codes: &[i8], scales: &[f32], block: usize, out: &mut [f32]) {
    // SAFETY: as for `quantize_nearest`: NEON is baseline on aarch64.
    unsafe { dequantize_neon(codes, scales, block, out) }
}

#[target_feature(enable = "neon")]
fn dequantize_neon(codes: &[i8], scales: &[f32], block: usize, out: &mut [f32]) {
    let blocks = codes.chunks(block.max(1)).zip(out.chunks_mut(block.max(1)));
    for ((cb, ob), &scale) in blocks.zip(scales) {
        dequantize_block(cb, scale, ob);
    }
}

/// One block of [`dequantize`].
#[inline]
#[target_feature(enable = "neon")]
fn dequantize_block(codes: &[i8], scale: f32, out: &mut [f32]) {
    let n = codes.len().min(out.len());
    let (src, c_tail) = codes[..n].as_chunks::<16>();
    let (dst, o_tail) = out[..n].as_chunks_mut::<16>();
    let s = vdupq_n_f32(scale);
    for (c, o) in src.iter().zip(dst) {
        // SAFETY: `c` is 16 readable i8s; vld1q_s8 has no alignment requirement.
        let b = unsafe { vld1q_s8(c.as_ptr()) };
        let (lo, hi) = (vmovl_s8(vget_low_s8(b)), vmovl_high_s8(b));
        let w = [
            vmovl_s16(vget_low_s16(lo)),
            vmovl_high_s16(lo),
            vmovl_s16(vget_low_s16(hi)),
            vmovl_high_s16(hi),
        ];
        for (lane, &wi) in w.iter().enumerate() {
            let f = vmulq_f32(vcvtq_f32_s32(wi), s);
            // SAFETY: `o` is 16 writable f32s, so `o[4 lane..]` has 4; vst1q_f32 has no
            // alignment requirement beyond f32's.
            unsafe { vst1q_f32(o.as_mut_ptr().add(4 * lane), f) }
        }
    }
    scalar::dequantize(c_tail, scale, o_tail);
}
