//! Per-ISA backends. Each folder implements the same kernels with the same algorithm;
//! `crate::reduce` and friends dispatch to the one this target has.

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
