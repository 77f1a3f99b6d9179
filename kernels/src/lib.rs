//! SIMD kernels for tandem's hot paths.
//!
//! Guarantees:
//! - Every public function is safe. It checks its own lengths and documents any panic.
//! - One algorithm, three backends: NEON on aarch64 (chosen at compile time: NEON is
//!   baseline there), a 128-bit SSE mirror on x86_64 (same vector width, same algorithm,
//!   so x86 timings are a native proxy for NEON's), and a portable scalar fallback.
//!   [`active_backend`] says which one runs. The one exception is the low-rank GEMM,
//!   which uses 256-bit AVX + FMA on x86_64 (it serves the cloud peer, where speed
//!   matters more than mirroring; see [`linalg::gemm_backend`]).
//! - Results agree with the naive oracle in `reference.rs` within the tolerance each
//!   function documents; tests check every backend against it.
//!
//! This is the only crate of the workspace that contains `unsafe`; each block carries a
//! `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
mod cast;
pub mod dct;
mod error;
pub mod heap;
pub mod linalg;
pub mod quant;
pub mod reduce;
pub mod robust;
mod scalar;
pub mod select;
pub mod sort;

pub use error::KernelError;
pub use robust::{median, trimmed_mean};
pub use select::{kth_largest_abs, top_k_abs};
pub use sort::{merge_i32, sort_f32, sort_i32, sort_pairs_f32, sort_u32, sort64_i32};

#[cfg(test)]
mod reference;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod trace;

/// The instruction set a kernel call runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// aarch64 Advanced SIMD (NEON), 128-bit lanes.
    Neon,
    /// x86_64 SSE2 (baseline on x86_64), 128-bit lanes mirroring NEON.
    Sse2,
    /// x86_64 SSE4.1 (detected at run time), 128-bit lanes mirroring NEON.
    Sse41,
    /// x86_64 FMA3 on 256-bit AVX vectors (detected at run time): the GEMM kernels.
    Fma,
    /// Portable scalar code.
    Scalar,
}

/// The backend that the reductions of this build use on this CPU (see
/// [`sort::sort_backend`] for the sort).
pub fn active_backend() -> Backend {
    if cfg!(tandem_neon) {
        Backend::Neon
    } else if cfg!(tandem_sse2) {
        Backend::Sse2
    } else {
        Backend::Scalar
    }
}
