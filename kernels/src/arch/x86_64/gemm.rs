//! x86 FMA lane operations for the GEMM micro-kernels: the mirror of NEON's, 128-bit
//! vectors of 4 f32 and a fused multiply-add (`vfmadd231ps xmm`) per NEON `fmla`; the
//! lane broadcast is a `shufps`. FMA is detected at run time.

use crate::linalg::lanes::FmaLanes;
use core::arch::x86_64::{
    __m128, _mm_fmadd_ps, _mm_loadu_ps, _mm_setzero_ps, _mm_shuffle_ps, _mm_storeu_ps,
};

/// Token proving the CPU has FMA (and AVX): only [`Fma128::new`] makes one.
#[derive(Clone, Copy)]
pub(crate) struct Fma128(());

impl Fma128 {
    /// `Some` if this CPU has FMA (std caches the detection).
    pub(crate) fn new() -> Option<Self> {
        (std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx"))
            .then_some(Self(()))
    }

    /// `out = x * q`, see [`crate::linalg::matmul_xq`].
    pub(crate) fn xq(self, x: &[f32], n: usize, d: usize, q: &[f32], r: usize, out: &mut [f32]) {
        // SAFETY: `self` exists only if FMA and AVX were detected on this CPU.
        unsafe { xq_fma(self, x, n, d, q, r, out) }
    }

    /// `out = x^T * p`, see [`crate::linalg::matmul_xtp`].
    pub(crate) fn xtp(self, x: &[f32], n: usize, d: usize, p: &[f32], r: usize, out: &mut [f32]) {
        // SAFETY: `self` exists only if FMA and AVX were detected on this CPU.
        unsafe { xtp_fma(self, x, n, d, p, r, out) }
    }
}

// The generic kernels compiled with FMA enabled, so the `#[inline(always)]` lane
// operations inline into them as single instructions.

#[target_feature(enable = "avx,fma")]
fn xq_fma(l: Fma128, x: &[f32], n: usize, d: usize, q: &[f32], r: usize, out: &mut [f32]) {
    crate::linalg::micro::xq(l, x, n, d, q, r, out);
}

#[target_feature(enable = "avx,fma")]
fn xtp_fma(l: Fma128, x: &[f32], n: usize, d: usize, p: &[f32], r: usize, out: &mut [f32]) {
    crate::linalg::micro::xtp(l, x, n, d, p, r, out);
}

// SAFETY (for every `unsafe` block below): a `Fma128` value exists only after run-time
// detection found FMA and AVX (which imply SSE), so the intrinsics' target-feature
// requirements hold; every pointer comes from a slice indexed to at least 4 elements
// first, and the loads and stores are unaligned ones.
impl FmaLanes for Fma128 {
    const W: usize = 4;
    const NV: usize = 2;
    const MR: usize = 4;
    type V = __m128;
    type X4 = __m128;

    #[inline(always)]
    fn zero(self) -> __m128 {
        // SAFETY: see the impl comment.
        unsafe { _mm_setzero_ps() }
    }

    #[inline(always)]
    fn load(self, src: &[f32]) -> __m128 {
        let src = &src[..4];
        // SAFETY: see the impl comment.
        unsafe { _mm_loadu_ps(src.as_ptr()) }
    }

    #[inline(always)]
    fn store(self, v: __m128, dst: &mut [f32]) {
        let dst = &mut dst[..4];
        // SAFETY: see the impl comment.
        unsafe { _mm_storeu_ps(dst.as_mut_ptr(), v) }
    }

    #[inline(always)]
    fn load_x4(self, src: &[f32]) -> __m128 {
        let src = &src[..4];
        // SAFETY: see the impl comment.
        unsafe { _mm_loadu_ps(src.as_ptr()) }
    }

    #[inline(always)]
    fn fma_lane<const L: i32>(self, acc: __m128, b: __m128, x: __m128) -> __m128 {
        // SAFETY: see the impl comment.
        unsafe {
            let s = match L {
                0 => _mm_shuffle_ps::<0x00>(x, x),
                1 => _mm_shuffle_ps::<0x55>(x, x),
                2 => _mm_shuffle_ps::<0xaa>(x, x),
                _ => _mm_shuffle_ps::<0xff>(x, x),
            };
            _mm_fmadd_ps(b, s, acc)
        }
    }
}
