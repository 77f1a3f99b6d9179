//! The lane operations the GEMM micro-kernels are written over, implemented once per
//! instruction set (NEON, x86 FMA mirror, scalar).

/// Vector operations of one backend. Every method is `#[inline(always)]` in its
/// implementations, so the generic kernels compile to straight SIMD code inside the
/// backend's `#[target_feature]` entry points.
pub(crate) trait FmaLanes: Copy {
    /// f32 lanes per vector.
    const W: usize;
    /// Vectors per row of a register tile (a tile is `MR` rows x `NV * W` columns).
    /// At most 4.
    const NV: usize;
    /// Rows of a register tile: 4 or 8 (a multiple of 4, at most 8).
    const MR: usize;
    /// The backend, as reported by [`crate::linalg::gemm_backend`].
    const BACKEND: crate::Backend;
    /// A vector of `W` lanes.
    type V: Copy;
    /// Four scalars held so that each can be broadcast cheaply (`fmla` by element).
    type X4: Copy;
    /// All lanes zero.
    fn zero(self) -> Self::V;
    /// Loads `W` lanes from the start of `src` (panics if shorter).
    fn load(self, src: &[f32]) -> Self::V;
    /// Stores `W` lanes to the start of `dst` (panics if shorter).
    fn store(self, v: Self::V, dst: &mut [f32]);
    /// Loads the first four scalars of `src` for [`FmaLanes::fma_lane`] (panics if
    /// shorter).
    fn load_x4(self, src: &[f32]) -> Self::X4;
    /// `acc + b * x[L]` lane-wise (fused where the backend has FMA).
    fn fma_lane<const L: i32>(self, acc: Self::V, b: Self::V, x: Self::X4) -> Self::V;
}

/// A computation written once over [`FmaLanes`]; [`run`] runs it on this CPU's
/// backend. Implementations mark `run` `#[inline(always)]`, so it compiles inside the
/// backend's `#[target_feature]` entry point with the lane operations as single
/// instructions.
pub(crate) trait LanesJob {
    /// What the job returns.
    type Output;
    /// Runs the job on `l`'s lanes.
    fn run<L: FmaLanes>(self, l: L) -> Self::Output;
}

/// Runs `job` on the lanes this CPU has: NEON on aarch64, AVX + FMA on x86_64 when
/// detected (std caches the detection), scalar otherwise.
pub(crate) fn run<J: LanesJob>(job: J) -> J::Output {
    #[cfg(tandem_neon)]
    return job.run(crate::arch::aarch64::gemm::Neon);
    #[cfg(tandem_sse2)]
    if let Some(fma) = crate::arch::x86_64::gemm::Fma256::new() {
        return fma.run(job);
    }
    #[allow(unreachable_code)]
    job.run(Scalar)
}

/// The portable backend: one lane, a 4 x 4 tile of scalar accumulators. Where the
/// target has fused multiply-add in its baseline (aarch64, or x86 built with `fma`),
/// each step is one `fmadd`, as a scalar build would compile it.
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl FmaLanes for Scalar {
    const W: usize = 1;
    const NV: usize = 4;
    const MR: usize = 4;
    const BACKEND: crate::Backend = crate::Backend::Scalar;
    type V = f32;
    type X4 = [f32; 4];

    #[inline(always)]
    fn zero(self) -> f32 {
        0.0
    }
    #[inline(always)]
    fn load(self, src: &[f32]) -> f32 {
        src[0]
    }
    #[inline(always)]
    fn store(self, v: f32, dst: &mut [f32]) {
        dst[0] = v;
    }
    #[inline(always)]
    fn load_x4(self, src: &[f32]) -> [f32; 4] {
        [src[0], src[1], src[2], src[3]]
    }
    #[inline(always)]
    fn fma_lane<const L: i32>(self, acc: f32, b: f32, x: [f32; 4]) -> f32 {
        #[cfg(any(target_arch = "aarch64", target_feature = "fma"))]
        return b.mul_add(x[L as usize], acc);
        // Without hardware FMA, `mul_add` is a libm call: mul + add instead.
        #[cfg(not(any(target_arch = "aarch64", target_feature = "fma")))]
        return acc + b * x[L as usize];
    }
}
