//! Per-ISA backends. Each folder implements the same kernels with the same algorithm;
//! `crate::reduce` and friends dispatch to the one this target has.

#[cfg(tandem_neon)]
pub(crate) mod aarch64;
#[cfg(tandem_sse2)]
pub(crate) mod x86_64;
