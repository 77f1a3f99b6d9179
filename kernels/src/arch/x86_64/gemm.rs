//! x86 FMA lane operations for the GEMM micro-kernels: 256-bit AVX vectors of 8 f32, a
//! fused multiply-add (`vfmadd231ps ymm`) per step, and the scalar operand broadcast
//! straight from memory (`vbroadcastss ymm, m32`, a load-port operation, where NEON
//! uses `fmla` by element). The tile is 8 rows x 8 columns: 8 accumulators, enough to
//! cover the FMA latency, in 16 registers. FMA and AVX are detected at run time.

use crate::linalg::lanes::{FmaLanes, LanesJob};
use core::arch::x86_64::{
    __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};

/// Token proving the CPU has FMA and AVX: only [`Fma256::new`] makes one.
#[derive(Clone, Copy)]
pub(crate) struct Fma256(());

impl Fma256 {
    /// `Some` if this CPU has FMA (std caches the detection).
    pub(crate) fn new() -> Option<Self> {
        (std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx"))
            .then_some(Self(()))
    }

    /// Runs `job` on these lanes, compiled with AVX and FMA enabled.
    pub(crate) fn run<J: LanesJob>(self, job: J) -> J::Output {
        // SAFETY: `self` exists only if FMA and AVX were detected on this CPU.
        unsafe { run_fma(self, job) }
    }
}

/// The job compiled with AVX and FMA enabled, so the `#[inline(always)]` lane
/// operations inline into it as single instructions.
#[target_feature(enable = "avx,fma")]
fn run_fma<J: LanesJob>(l: Fma256, job: J) -> J::Output {
    job.run(l)
}

// SAFETY (for every `unsafe` block below): a `Fma256` value exists only after run-time
// detection found FMA and AVX, so the intrinsics' target-feature requirements hold;
// every pointer comes from a slice indexed to at least 8 elements first, and the loads
// and stores are unaligned ones.
impl FmaLanes for Fma256 {
    const W: usize = 8;
    const NV: usize = 1;
    const MR: usize = 8;
    const BACKEND: crate::Backend = crate::Backend::Fma;
    type V = __m256;
    type X4 = [f32; 4];

    #[inline(always)]
    fn zero(self) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    fn load(self, src: &[f32]) -> __m256 {
        let src = &src[..8];
        // SAFETY: see the impl comment.
        unsafe { _mm256_loadu_ps(src.as_ptr()) }
    }

    #[inline(always)]
    fn store(self, v: __m256, dst: &mut [f32]) {
        let dst = &mut dst[..8];
        // SAFETY: see the impl comment.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
    }

    #[inline(always)]
    fn load_x4(self, src: &[f32]) -> [f32; 4] {
        let src = &src[..4];
        [src[0], src[1], src[2], src[3]]
    }

    #[inline(always)]
    fn fma_lane<const L: i32>(self, acc: __m256, b: __m256, x: [f32; 4]) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_fmadd_ps(b, _mm256_set1_ps(x[L as usize]), acc) }
    }
}
