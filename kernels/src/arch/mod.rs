//! Per-ISA backends. Each folder implements the same kernels with the same algorithm;
//! `crate::reduce` and friends dispatch to the one this target has.

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) mod aarch64;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub(crate) mod x86_64;
