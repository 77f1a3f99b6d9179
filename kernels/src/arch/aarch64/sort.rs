//! NEON implementation of the sort's vector operations.

use crate::sort::vector::SortVector;
use core::arch::aarch64::{
    int32x4_t, vextq_s32, vld1q_s32, vmaxq_s32, vminq_s32, vreinterpretq_s32_s64,
    vreinterpretq_s64_s32, vrev64q_s32, vst1q_s32, vtrn1q_s32, vtrn1q_s64, vtrn2q_s32, vtrn2q_s64,
    vzip1q_s32, vzip1q_s64, vzip2q_s32, vzip2q_s64,
};

/// Token for NEON, which every aarch64 CPU has (this module is compiled only with
/// `target_feature = "neon"`).
#[derive(Clone, Copy)]
pub(crate) struct Neon;

/// Sorts 64 keys in registers. Never inlined, so its code can be fed to llvm-mca
/// (`cargo xtask bench sort-mca`).
#[inline(never)]
pub(crate) fn sort64_i32(block: &mut [i32; 64]) {
    crate::sort::sort_block(Neon, block);
}

/// Sorts `data` ascending with NEON.
pub(crate) fn sort_i32(data: &mut [i32]) {
    crate::sort::driver_sort_i32(Neon, data);
}

// SAFETY (for every `unsafe` block below): NEON is enabled for this whole module at
// compile time, so the intrinsics' target-feature requirement holds; the only pointer
// arguments come from `&[i32; 4]` / `&mut [i32; 4]`, valid for 4 lanes.
impl SortVector for Neon {
    const BACKEND: crate::Backend = crate::Backend::Neon;
    // the NEON-MS hybrid: a few scalar steps per vector step keep the integer pipes
    // busy on cores that issue NEON and integer ops side by side (not yet timed on a board).
    const HYBRID_BACK: usize = 2;
    type V = int32x4_t;

    #[inline(always)]
    fn load(self, src: &[i32; 4]) -> int32x4_t {
        // SAFETY: see the impl comment; `src` is 4 readable i32.
        unsafe { vld1q_s32(src.as_ptr()) }
    }

    #[inline(always)]
    fn store(self, v: int32x4_t, dst: &mut [i32; 4]) {
        // SAFETY: see the impl comment; `dst` is 4 writable i32.
        unsafe { vst1q_s32(dst.as_mut_ptr(), v) }
    }

    #[inline(always)]
    fn min(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vminq_s32(a, b) }
    }

    #[inline(always)]
    fn max(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vmaxq_s32(a, b) }
    }

    #[inline(always)]
    fn reverse(self, v: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe {
            // [1, 0, 3, 2], then swap the halves: [3, 2, 1, 0].
            let r = vrev64q_s32(v);
            vextq_s32::<2>(r, r)
        }
    }

    #[inline(always)]
    fn transpose(self, r: [int32x4_t; 4]) -> [int32x4_t; 4] {
        // SAFETY: see the impl comment.
        unsafe {
            let t0 = vreinterpretq_s64_s32(vtrn1q_s32(r[0], r[1])); // r0_0 r1_0 r0_2 r1_2
            let t1 = vreinterpretq_s64_s32(vtrn2q_s32(r[0], r[1])); // r0_1 r1_1 r0_3 r1_3
            let t2 = vreinterpretq_s64_s32(vtrn1q_s32(r[2], r[3]));
            let t3 = vreinterpretq_s64_s32(vtrn2q_s32(r[2], r[3]));
            [
                vreinterpretq_s32_s64(vtrn1q_s64(t0, t2)),
                vreinterpretq_s32_s64(vtrn1q_s64(t1, t3)),
                vreinterpretq_s32_s64(vtrn2q_s64(t0, t2)),
                vreinterpretq_s32_s64(vtrn2q_s64(t1, t3)),
            ]
        }
    }

    #[inline(always)]
    fn sort_bitonic_lanes(self, x: int32x4_t, y: int32x4_t) -> (int32x4_t, int32x4_t) {
        // SAFETY: see the impl comment.
        unsafe {
            // Distance 2: pair lanes (0,2), (1,3) of x and of y.
            let (x64, y64) = (vreinterpretq_s64_s32(x), vreinterpretq_s64_s32(y));
            let p = vreinterpretq_s32_s64(vzip1q_s64(x64, y64)); // x0 x1 y0 y1
            let q = vreinterpretq_s32_s64(vzip2q_s64(x64, y64)); // x2 x3 y2 y3
            let (lo, hi) = (vminq_s32(p, q), vmaxq_s32(p, q)); // x0' x1' y0' y1' / x2' ..
            // Distance 1: pair lanes (0,1), (2,3).
            let p = vtrn1q_s32(lo, hi); // x0' x2' y0' y2'
            let q = vtrn2q_s32(lo, hi); // x1' x3' y1' y3'
            let (mn, mx) = (vminq_s32(p, q), vmaxq_s32(p, q));
            (vzip1q_s32(mn, mx), vzip2q_s32(mn, mx))
        }
    }
}
