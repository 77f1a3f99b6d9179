//! SSE4.1 implementation of the sort's lane operations (the x86_64 mirror of the NEON
//! one: same 4 x i32 vectors, same networks). SSE4.1 brings `pminsd`/`pmaxsd` and
//! `pblendvb`; it is detected at run time.

use crate::sort::vector::{Keys, Lanes, Pair, Pairs, UnsignedKeys};
use core::arch::x86_64::{
    __m128i, _mm_and_si128, _mm_blendv_epi8, _mm_castps_si128, _mm_castsi128_ps, _mm_cmpeq_epi32,
    _mm_cmpgt_epi32, _mm_loadu_si128, _mm_max_epi32, _mm_max_epu32, _mm_min_epi32, _mm_min_epu32,
    _mm_or_si128, _mm_set1_epi32, _mm_shuffle_epi32, _mm_shuffle_ps, _mm_storeu_si128,
    _mm_unpackhi_epi32, _mm_unpackhi_epi64, _mm_unpacklo_epi32, _mm_unpacklo_epi64, _mm_xor_si128,
};

/// Token proving the CPU has SSE4.1: only [`Sse41::new`] makes one, after detection.
#[derive(Clone, Copy)]
pub(crate) struct Sse41(());

impl Sse41 {
    /// `Some` if this CPU has SSE4.1 (detected once; std caches the answer).
    pub(crate) fn new() -> Option<Self> {
        std::arch::is_x86_feature_detected!("sse4.1").then_some(Self(()))
    }

    /// Sorts `data` ascending with SSE4.1.
    pub(crate) fn sort_i32(self, data: &mut [i32]) {
        // SAFETY: `self` exists only if SSE4.1 was detected on this CPU.
        unsafe { sort_i32_sse41(self, data) }
    }

    /// Sorts `data` ascending with SSE4.1.
    pub(crate) fn sort_u32(self, data: &mut [u32]) {
        // SAFETY: `self` exists only if SSE4.1 was detected on this CPU.
        unsafe { sort_u32_sse41(self, data) }
    }

    /// Sorts (key, index) pairs with SSE4.1.
    pub(crate) fn sort_pairs(self, data: &mut [Pair]) {
        // SAFETY: `self` exists only if SSE4.1 was detected on this CPU.
        unsafe { sort_pairs_sse41(self, data) }
    }

    /// Sorts 64 keys in registers with SSE4.1.
    pub(crate) fn sort64_i32(self, block: &mut [i32; 64]) {
        // SAFETY: `self` exists only if SSE4.1 was detected on this CPU.
        unsafe { sort64_i32_sse41(self, block) }
    }

    /// Merges sorted `a` and `b` into `out` (`a.len() + b.len()` long).
    pub(crate) fn merge_i32(self, a: &[i32], b: &[i32], out: &mut [i32]) {
        // SAFETY: `self` exists only if SSE4.1 was detected on this CPU.
        unsafe { merge_i32_sse41(self, a, b, out) }
    }
}

// The generic sort compiled with SSE4.1 enabled, so the `#[inline(always)]` lane
// operations below inline into it as single instructions.

#[target_feature(enable = "sse4.1")]
fn sort_i32_sse41(token: Sse41, data: &mut [i32]) {
    crate::sort::driver_sort(Keys(token), data);
}

#[target_feature(enable = "sse4.1")]
fn sort_u32_sse41(token: Sse41, data: &mut [u32]) {
    crate::sort::driver_sort(UnsignedKeys(token), data);
}

#[target_feature(enable = "sse4.1")]
fn sort_pairs_sse41(token: Sse41, data: &mut [Pair]) {
    crate::sort::driver_sort(Pairs(token), data);
}

#[target_feature(enable = "sse4.1")]
fn merge_i32_sse41(token: Sse41, a: &[i32], b: &[i32], out: &mut [i32]) {
    crate::sort::merge(Keys(token), a, b, out);
}

#[target_feature(enable = "sse4.1")]
fn sort64_i32_sse41(token: Sse41, block: &mut [i32; 64]) {
    crate::sort::sort_block(Keys(token), block);
}

// SAFETY (for every `unsafe` block below): a `Sse41` value exists only after run-time
// detection found SSE4.1 (which implies SSE2), so the intrinsics' target-feature
// requirement holds; the only pointer arguments come from `&[i32; 4]` /
// `&mut [i32; 4]` (16 bytes) or `&[Pair; 4]` / `&mut [Pair; 4]` (32 bytes, `Pair` being
// `repr(C)`), and all loads and stores are unaligned ones.
impl Lanes for Sse41 {
    const BACKEND: crate::Backend = crate::Backend::Sse41;
    // Measured on x86_64: any scalar share slowed the mirror down (BENCHMARKS.md).
    const HYBRID_BACK: usize = 0;
    type V = __m128i;

    #[inline(always)]
    fn load(self, src: &[i32; 4]) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_loadu_si128(src.as_ptr().cast()) }
    }

    #[inline(always)]
    fn store(self, v: __m128i, dst: &mut [i32; 4]) {
        // SAFETY: see the impl comment.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), v) }
    }

    #[inline(always)]
    fn load_pairs(self, src: &[Pair; 4]) -> (__m128i, __m128i) {
        // SAFETY: see the impl comment.
        unsafe {
            let p = src.as_ptr().cast::<__m128i>();
            let a = _mm_castsi128_ps(_mm_loadu_si128(p)); // k0 i0 k1 i1
            let b = _mm_castsi128_ps(_mm_loadu_si128(p.add(1))); // k2 i2 k3 i3
            (
                _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(a, b)), // k0 k1 k2 k3
                _mm_castps_si128(_mm_shuffle_ps::<0b11_01_11_01>(a, b)), // i0 i1 i2 i3
            )
        }
    }

    #[inline(always)]
    fn store_pairs(self, keys: __m128i, idx: __m128i, dst: &mut [Pair; 4]) {
        // SAFETY: see the impl comment.
        unsafe {
            let p = dst.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(p, _mm_unpacklo_epi32(keys, idx));
            _mm_storeu_si128(p.add(1), _mm_unpackhi_epi32(keys, idx));
        }
    }

    #[inline(always)]
    fn min(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_min_epi32(a, b) }
    }

    #[inline(always)]
    fn max(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_max_epi32(a, b) }
    }

    #[inline(always)]
    fn min_unsigned(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_min_epu32(a, b) }
    }

    #[inline(always)]
    fn max_unsigned(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_max_epu32(a, b) }
    }

    #[inline(always)]
    fn gt(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_cmpgt_epi32(a, b) }
    }

    #[inline(always)]
    fn gt_unsigned(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe {
            // Flipping the sign bit maps unsigned order onto signed order.
            let bias = _mm_set1_epi32(i32::MIN);
            _mm_cmpgt_epi32(_mm_xor_si128(a, bias), _mm_xor_si128(b, bias))
        }
    }

    #[inline(always)]
    fn eq(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_cmpeq_epi32(a, b) }
    }

    #[inline(always)]
    fn and(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_and_si128(a, b) }
    }

    #[inline(always)]
    fn or(self, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_or_si128(a, b) }
    }

    #[inline(always)]
    fn select(self, mask: __m128i, a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: see the impl comment. blendv takes its second operand where the mask
        // byte's top bit is set.
        unsafe { _mm_blendv_epi8(b, a, mask) }
    }

    #[inline(always)]
    fn reverse(self, v: __m128i) -> __m128i {
        // SAFETY: see the impl comment.
        unsafe { _mm_shuffle_epi32::<0b00_01_10_11>(v) }
    }

    #[inline(always)]
    fn transpose(self, r: [__m128i; 4]) -> [__m128i; 4] {
        // SAFETY: see the impl comment.
        unsafe {
            let t0 = _mm_unpacklo_epi32(r[0], r[1]); // r0_0 r1_0 r0_1 r1_1
            let t1 = _mm_unpacklo_epi32(r[2], r[3]); // r2_0 r3_0 r2_1 r3_1
            let t2 = _mm_unpackhi_epi32(r[0], r[1]); // r0_2 r1_2 r0_3 r1_3
            let t3 = _mm_unpackhi_epi32(r[2], r[3]);
            [
                _mm_unpacklo_epi64(t0, t1),
                _mm_unpackhi_epi64(t0, t1),
                _mm_unpacklo_epi64(t2, t3),
                _mm_unpackhi_epi64(t2, t3),
            ]
        }
    }

    #[inline(always)]
    fn split_halves(self, x: __m128i, y: __m128i) -> (__m128i, __m128i) {
        // SAFETY: see the impl comment.
        unsafe { (_mm_unpacklo_epi64(x, y), _mm_unpackhi_epi64(x, y)) }
    }

    #[inline(always)]
    fn split_neighbours(self, lo: __m128i, hi: __m128i) -> (__m128i, __m128i) {
        // lo = x0 x1 y0 y1, hi = x2 x3 y2 y3 -> p = x0 x2 y0 y2, q = x1 x3 y1 y3.
        // SAFETY: see the impl comment.
        unsafe {
            let a = _mm_unpacklo_epi32(lo, hi); // x0 x2 x1 x3
            let b = _mm_unpackhi_epi32(lo, hi); // y0 y2 y1 y3
            (_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b))
        }
    }

    #[inline(always)]
    fn join_neighbours(self, mn: __m128i, mx: __m128i) -> (__m128i, __m128i) {
        // Lane j of (mn, mx) is pair j of x0x1, x2x3, y0y1, y2y3 in order.
        // SAFETY: see the impl comment.
        unsafe { (_mm_unpacklo_epi32(mn, mx), _mm_unpackhi_epi32(mn, mx)) }
    }
}
