//! SSE4.1 implementation of the sort's vector operations (the x86_64 mirror of the NEON
//! one: same 4 x i32 vectors, same networks). SSE4.1 brings `pminsd`/`pmaxsd`; it is
//! detected at run time.

use crate::sort::vector::SortVector;
use core::arch::x86_64::{
    __m128i, _mm_loadu_si128, _mm_max_epi32, _mm_min_epi32, _mm_shuffle_epi32, _mm_storeu_si128,
    _mm_unpackhi_epi32, _mm_unpackhi_epi64, _mm_unpacklo_epi32, _mm_unpacklo_epi64,
};

/// Token proving the CPU has SSE4.1: only [`Sse41::new`] makes one, after detection.
#[derive(Clone, Copy)]
pub(crate) struct Sse41(());

impl Sse41 {
    /// `Some` if this CPU has SSE4.1 (detected once; std caches the answer).
    pub(crate) fn new() -> Option<Self> {
        std::arch::is_x86_feature_detected!("sse4.1").then_some(Self(()))
    }

    /// Sorts 64 keys in registers with SSE4.1.
    pub(crate) fn sort64_i32(self, block: &mut [i32; 64]) {
        // SAFETY: `self` exists only if SSE4.1 was detected on this CPU.
        unsafe { sort64_i32_sse41(self, block) }
    }

    /// Sorts `data` ascending with SSE4.1.
    pub(crate) fn sort_i32(self, data: &mut [i32]) {
        // SAFETY: `self` exists only if SSE4.1 was detected on this CPU.
        unsafe { sort_i32_sse41(self, data) }
    }
}

/// The generic sort compiled with SSE4.1 enabled, so the `#[inline(always)]` vector
/// operations below inline into it as single instructions.
#[target_feature(enable = "sse4.1")]
fn sort_i32_sse41(token: Sse41, data: &mut [i32]) {
    crate::sort::driver_sort_i32(token, data);
}

/// The in-register phase compiled with SSE4.1 enabled.
#[target_feature(enable = "sse4.1")]
fn sort64_i32_sse41(token: Sse41, block: &mut [i32; 64]) {
    crate::sort::sort_block(token, block);
}

// SAFETY (for every `unsafe` block below): a `Sse41` value exists only after run-time
// detection found SSE4.1 (which implies SSE2), so the intrinsics' target-feature
// requirement holds; the only pointer arguments come from `&[i32; 4]` / `&mut [i32; 4]`,
// valid for 16 bytes, and the loads/stores are unaligned ones.
impl SortVector for Sse41 {
    const BACKEND: crate::Backend = crate::Backend::Sse41;
    // measured on x86_64: any scalar share slowed the mirror down (BENCHMARKS.md).
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
    fn sort_bitonic_lanes(self, x: __m128i, y: __m128i) -> (__m128i, __m128i) {
        // SAFETY: see the impl comment.
        unsafe {
            // Distance 2: pair lanes (0,2), (1,3) of x and of y.
            let p = _mm_unpacklo_epi64(x, y); // x0 x1 y0 y1
            let q = _mm_unpackhi_epi64(x, y); // x2 x3 y2 y3
            let (lo, hi) = (_mm_min_epi32(p, q), _mm_max_epi32(p, q)); // x0' x1' y0' y1' / x2' x3' y2' y3'
            // Distance 1: pair lanes (0,1), (2,3).
            let a = _mm_unpacklo_epi32(lo, hi); // x0' x2' x1' x3'
            let b = _mm_unpackhi_epi32(lo, hi); // y0' y2' y1' y3'
            let p = _mm_unpacklo_epi64(a, b); // x0' x2' y0' y2'
            let q = _mm_unpackhi_epi64(a, b); // x1' x3' y1' y3'
            let (mn, mx) = (_mm_min_epi32(p, q), _mm_max_epi32(p, q));
            // mn = min(x0',x1') min(x2',x3') min(y0',y1') min(y2',y3'), mx likewise.
            let lo = _mm_unpacklo_epi32(mn, mx); // x-sorted: m0 M0 m1 M1
            let hi = _mm_unpackhi_epi32(mn, mx); // y-sorted: m2 M2 m3 M3
            (lo, hi)
        }
    }
}
