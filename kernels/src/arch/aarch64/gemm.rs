//! NEON lane operations for the GEMM micro-kernels: 4 x f32 vectors, `fmla` by element.

use crate::linalg::lanes::FmaLanes;
use core::arch::aarch64::{float32x4_t, vdupq_n_f32, vfmaq_laneq_f32, vld1q_f32, vst1q_f32};

/// NEON (baseline on aarch64).
#[derive(Clone, Copy)]
pub(crate) struct Neon;

// SAFETY (for every `unsafe` block below): NEON is part of the aarch64 baseline this
// module is compiled for (`target_feature = "neon"`), and every pointer comes from a
// slice indexed to at least 4 elements first (`src[..4]`), so each load or store touches
// 16 valid bytes; vld1q/vst1q have no alignment requirement.
impl FmaLanes for Neon {
    const W: usize = 4;
    const NV: usize = 2;
    const MR: usize = 8;
    const BACKEND: crate::Backend = crate::Backend::Neon;
    type V = float32x4_t;
    type X4 = float32x4_t;

    #[inline(always)]
    fn zero(self) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vdupq_n_f32(0.0) }
    }

    #[inline(always)]
    fn load(self, src: &[f32]) -> float32x4_t {
        let src = &src[..4];
        // SAFETY: see the impl comment.
        unsafe { vld1q_f32(src.as_ptr()) }
    }

    #[inline(always)]
    fn store(self, v: float32x4_t, dst: &mut [f32]) {
        let dst = &mut dst[..4];
        // SAFETY: see the impl comment.
        unsafe { vst1q_f32(dst.as_mut_ptr(), v) }
    }

    #[inline(always)]
    fn load_x4(self, src: &[f32]) -> float32x4_t {
        let src = &src[..4];
        // SAFETY: see the impl comment.
        unsafe { vld1q_f32(src.as_ptr()) }
    }

    #[inline(always)]
    fn fma_lane<const L: i32>(
        self,
        acc: float32x4_t,
        b: float32x4_t,
        x: float32x4_t,
    ) -> float32x4_t {
        // SAFETY: see the impl comment.
        unsafe { vfmaq_laneq_f32::<L>(acc, b, x) }
    }
}
