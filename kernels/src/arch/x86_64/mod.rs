//! SSE kernels mirroring the NEON ones lane for lane (128-bit vectors of 4 f32). SSE2 is
//! part of the x86_64 baseline, so these need no run-time detection; kernels that want
//! SSE4.1, AVX or FMA detect them once at run time. The GEMM kernels (`gemm`) use
//! 256-bit AVX + FMA vectors.

pub(crate) mod gemm;
pub(crate) mod quant;
pub(crate) mod reduce;
pub(crate) mod sort;
