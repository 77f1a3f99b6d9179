//! NEON kernels. NEON is part of the aarch64 baseline, so no run-time detection is
//! needed: every function here is safe to call on any aarch64 CPU Rust supports.

pub(crate) mod gemm;
pub(crate) mod quant;
pub(crate) mod reduce;
pub(crate) mod sort;
