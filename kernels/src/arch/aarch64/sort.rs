//! NEON implementation of the sort's lane operations.

use crate::sort::vector::{Keys, Lanes, Pair, Pairs, UnsignedKeys};
use core::arch::aarch64::{
    int32x4_t, int32x4x2_t, vandq_s32, vbslq_s32, vceqq_s32, vcgtq_s32, vcgtq_u32, vextq_s32,
    vld1q_s32, vld2q_s32, vmaxq_s32, vmaxq_u32, vminq_s32, vminq_u32, vorrq_s32,
    vreinterpretq_s32_s64, vreinterpretq_s32_u32, vreinterpretq_s64_s32, vreinterpretq_u32_s32,
    vrev64q_s32, vst1q_s32, vst2q_s32, vtrn1q_s32, vtrn1q_s64, vtrn2q_s32, vtrn2q_s64, vzip1q_s32,
    vzip1q_s64, vzip2q_s32, vzip2q_s64,
};

/// Token for NEON, which every aarch64 CPU has (this module is compiled only with
/// `target_feature = "neon"`).
#[derive(Clone, Copy)]
pub(crate) struct Neon;

/// Sorts `data` ascending with NEON.
pub(crate) fn sort_i32(data: &mut [i32]) {
    crate::sort::driver_sort(Keys(Neon), data);
}

/// Sorts `data` ascending with NEON.
pub(crate) fn sort_u32(data: &mut [u32]) {
    crate::sort::driver_sort(UnsignedKeys(Neon), data);
}

/// Sorts (key, index) pairs with NEON.
pub(crate) fn sort_pairs(data: &mut [Pair]) {
    crate::sort::driver_sort(Pairs(Neon), data);
}

/// Sorts 64 keys in registers. Never inlined, so its code can be fed to llvm-mca
/// (`cargo xtask bench sort-mca`).
#[inline(never)]
pub(crate) fn sort64_i32(block: &mut [i32; 64]) {
    crate::sort::sort_block(Keys(Neon), block);
}

/// Merges sorted `a` and `b` into `out` (`a.len() + b.len()` long) with the vector
/// merge. Never inlined, so its loop can be fed to llvm-mca (`cargo xtask bench
/// sort-mca`); the sort inlines the same code.
#[inline(never)]
pub(crate) fn merge_i32(a: &[i32], b: &[i32], out: &mut [i32]) {
    crate::sort::merge(Keys(Neon), a, b, out);
}

// SAFETY (for every `unsafe` block below): NEON is enabled for this whole module at
// compile time, so the intrinsics' target-feature requirement holds; the only pointer
// arguments come from `&[i32; 4]` / `&mut [i32; 4]` (16 bytes) or `&[Pair; 4]` /
// `&mut [Pair; 4]` (32 bytes of 8 interleaved i32/u32 lanes, `Pair` being `repr(C)`).
impl Lanes for Neon {
    const BACKEND: crate::Backend = crate::Backend::Neon;
    // The vector merge alone: the NEON-MS hybrid (scalar steps from the back beside each
    // vector step) cost 8 more instructions a key since the radix partition, and no
    // board has timed its benefit yet (BENCHMARKS.md). Tests still run it.
    const HYBRID_BACK: usize = 0;
    type V = int32x4_t;

    #[inline(always)]
    fn load(self, src: &[i32; 4]) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vld1q_s32(src.as_ptr()) }
    }

    #[inline(always)]
    fn store(self, v: int32x4_t, dst: &mut [i32; 4]) {
        // SAFETY: see the impl comment.
        unsafe { vst1q_s32(dst.as_mut_ptr(), v) }
    }

    #[inline(always)]
    fn load_pairs(self, src: &[Pair; 4]) -> (int32x4_t, int32x4_t) {
        // SAFETY: see the impl comment; ld2 deinterleaves keys and indices.
        let v: int32x4x2_t = unsafe { vld2q_s32(src.as_ptr().cast::<i32>()) };
        (v.0, v.1)
    }

    #[inline(always)]
    fn store_pairs(self, keys: int32x4_t, idx: int32x4_t, dst: &mut [Pair; 4]) {
        // SAFETY: see the impl comment; st2 interleaves keys and indices.
        unsafe { vst2q_s32(dst.as_mut_ptr().cast::<i32>(), int32x4x2_t(keys, idx)) }
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
    fn gt(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vreinterpretq_s32_u32(vcgtq_s32(a, b)) }
    }

    #[inline(always)]
    fn min_unsigned(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe {
            vreinterpretq_s32_u32(vminq_u32(
                vreinterpretq_u32_s32(a),
                vreinterpretq_u32_s32(b),
            ))
        }
    }

    #[inline(always)]
    fn max_unsigned(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe {
            vreinterpretq_s32_u32(vmaxq_u32(
                vreinterpretq_u32_s32(a),
                vreinterpretq_u32_s32(b),
            ))
        }
    }

    #[inline(always)]
    fn gt_unsigned(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe {
            vreinterpretq_s32_u32(vcgtq_u32(
                vreinterpretq_u32_s32(a),
                vreinterpretq_u32_s32(b),
            ))
        }
    }

    #[inline(always)]
    fn eq(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vreinterpretq_s32_u32(vceqq_s32(a, b)) }
    }

    #[inline(always)]
    fn and(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vandq_s32(a, b) }
    }

    #[inline(always)]
    fn or(self, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vorrq_s32(a, b) }
    }

    #[inline(always)]
    fn select(self, mask: int32x4_t, a: int32x4_t, b: int32x4_t) -> int32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vbslq_s32(vreinterpretq_u32_s32(mask), a, b) }
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
    fn split_halves(self, x: int32x4_t, y: int32x4_t) -> (int32x4_t, int32x4_t) {
        // SAFETY: see the impl comment.
        unsafe {
            let (x64, y64) = (vreinterpretq_s64_s32(x), vreinterpretq_s64_s32(y));
            (
                vreinterpretq_s32_s64(vzip1q_s64(x64, y64)), // x0 x1 y0 y1
                vreinterpretq_s32_s64(vzip2q_s64(x64, y64)), // x2 x3 y2 y3
            )
        }
    }

    #[inline(always)]
    fn split_neighbours(self, lo: int32x4_t, hi: int32x4_t) -> (int32x4_t, int32x4_t) {
        // lo = x0 x1 y0 y1, hi = x2 x3 y2 y3 -> p = x0 x2 y0 y2, q = x1 x3 y1 y3.
        // SAFETY: see the impl comment.
        unsafe { (vtrn1q_s32(lo, hi), vtrn2q_s32(lo, hi)) }
    }

    #[inline(always)]
    fn join_neighbours(self, mn: int32x4_t, mx: int32x4_t) -> (int32x4_t, int32x4_t) {
        // Lane j of (mn, mx) is pair j of x0x1, x2x3, y0y1, y2y3 in order.
        // SAFETY: see the impl comment.
        unsafe { (vzip1q_s32(mn, mx), vzip2q_s32(mn, mx)) }
    }
}
