//! Sorting: the hybrid vectorised merge sort of NEON-MS ("A Hybrid Vectorized Merge Sort
//! on ARM NEON").
//!
//! 1. In-register phase ([`network`]): 64 keys in 16 vectors, the 4 columns sorted by an
//!    optimal 16-input network of `min`/`max`, then transposed into 4 sorted runs of 16.
//! 2. Merge phase ([`merge`]): runs merged pairwise, doubling in width, between the data
//!    and a scratch buffer. Each merge runs a vectorised bitonic 16 + 16 merge from the
//!    front interleaved with a branchless scalar merge from the back.
//!
//! The algorithm is written once over [`vector::SortVector`] on i32 keys. f32 and u32
//! are mapped onto i32 by order-preserving bijections applied in place before and after:
//! f32 in [`f32::total_cmp`] order (-NaN < -inf < ... < -0.0 < +0.0 < ... < +inf < +NaN),
//! u32 by flipping the sign bit.
//!
//! Every function allocates one scratch buffer of the input's length (inputs of at most
//! 64 keys are sorted in place by the scalar path and allocate nothing).

// The vectorised merge sort runs on the SIMD backends; a build without them (feature
// `portable`) sorts with the scalar path and leaves it unused.
#![cfg_attr(not(any(tandem_neon, tandem_sse2)), allow(dead_code, unused_imports))]

mod driver;
mod merge;
mod network;
mod radix;
pub(crate) mod vector;

use crate::Backend;
pub(crate) use driver::sort as driver_sort;
pub(crate) use network::sort_block;
pub(crate) use vector::Pair;

/// Sorts `data` ascending.
pub fn sort_i32(data: &mut [i32]) {
    sort_i32_dispatch(data);
}

/// Sorts `data` ascending.
pub fn sort_u32(data: &mut [u32]) {
    let keys = crate::cast::u32_as_i32_mut(data);
    flip_sign(keys);
    sort_i32_dispatch(keys);
    flip_sign(keys);
}

/// Sorts `data` in [`f32::total_cmp`] order: the same result, bit for bit, as
/// `data.sort_unstable_by(f32::total_cmp)` (negative NaNs first, positive NaNs last,
/// -0.0 before +0.0).
pub fn sort_f32(data: &mut [f32]) {
    let keys = crate::cast::f32_as_i32_mut(data);
    total_order_keys(keys);
    sort_i32_dispatch(keys);
    total_order_keys(keys);
}

/// Sorts `keys` in [`f32::total_cmp`] order and applies the same permutation to `idx`
/// ("sort by value, keep the index"). Equal keys keep their `idx` in ascending order.
///
/// Each (key, index) pair is sorted as one (order-preserving key, index) element by the
/// standard library's sort: measured faster than [`sort_pairs_f32_simd`] on the x86
/// mirror and fewer instructions on aarch64 (BENCHMARKS.md). Allocates `8 * len` bytes.
///
/// Errors if the two slices differ in length.
pub fn sort_pairs_f32(keys: &mut [f32], idx: &mut [u32]) -> Result<(), crate::KernelError> {
    sort_pairs_with(keys, idx, |pairs| pairs.sort_unstable())
}

/// [`sort_pairs_f32`] with the NEON-MS vector sort on (key, index) pairs held in two
/// registers per 4 pairs, compared by key, then index (so no two distinct pairs tie and
/// the hybrid merge's front/back split stays exact).
///
/// Correct, but slower than [`sort_pairs_f32`] today: a 64-pair in-register block needs
/// 32 vector registers and spills (BENCHMARKS.md). Kept, tested and benchmarked as the
/// base for a smaller-block pair kernel. Allocates `16 * len` bytes.
pub fn sort_pairs_f32_simd(keys: &mut [f32], idx: &mut [u32]) -> Result<(), crate::KernelError> {
    sort_pairs_with(keys, idx, sort_pairs_dispatch)
}

/// Packs (key, index) pairs, sorts them with `sort`, unpacks.
fn sort_pairs_with(
    keys: &mut [f32],
    idx: &mut [u32],
    sort: impl FnOnce(&mut [Pair]),
) -> Result<(), crate::KernelError> {
    crate::KernelError::check_len("idx", idx.len(), keys.len())?;
    let mut pairs: Vec<Pair> = keys
        .iter()
        .zip(idx.iter())
        .map(|(&k, &i)| Pair {
            key: total_order_key(k.to_bits() as i32),
            idx: i,
        })
        .collect();
    sort(&mut pairs);
    for ((k, i), p) in keys.iter_mut().zip(idx.iter_mut()).zip(pairs) {
        *k = f32::from_bits(total_order_key(p.key) as u32);
        *i = p.idx;
    }
    Ok(())
}

/// Sorts exactly 64 keys in registers (the in-register phase of the sort: a 16-input
/// network on 16 vectors, a transpose and bitonic merges). No allocation, no branches
/// on the data.
pub fn sort64_i32(block: &mut [i32; 64]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::sort::sort64_i32(block);
    #[cfg(target_arch = "x86_64")]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        return sse41.sort64_i32(block);
    }
    #[allow(unreachable_code)]
    block.sort_unstable()
}

/// The backend [`sort_i32`] and friends use for inputs longer than 64 keys on this CPU.
pub fn sort_backend() -> Backend {
    #[cfg(tandem_neon)]
    return <crate::arch::aarch64::sort::Neon as vector::Lanes>::BACKEND;
    #[cfg(target_arch = "x86_64")]
    if crate::arch::x86_64::sort::Sse41::new().is_some() {
        return <crate::arch::x86_64::sort::Sse41 as vector::Lanes>::BACKEND;
    }
    #[allow(unreachable_code)]
    Backend::Scalar
}

fn sort_i32_dispatch(data: &mut [i32]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::sort::sort_i32(data);
    #[cfg(target_arch = "x86_64")]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        return sse41.sort_i32(data);
    }
    #[allow(unreachable_code)]
    scalar_sort_i32(data)
}

fn sort_pairs_dispatch(data: &mut [Pair]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::sort::sort_pairs(data);
    #[cfg(target_arch = "x86_64")]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        return sse41.sort_pairs(data);
    }
    #[allow(unreachable_code)]
    data.sort_unstable()
}

/// The scalar backend: the standard library's pattern-defeating quicksort.
pub(crate) fn scalar_sort_i32(data: &mut [i32]) {
    #[cfg(test)]
    crate::trace::record(Backend::Scalar);
    data.sort_unstable();
}

/// The order-preserving i32 image of an f32's bits (as i32) under `f32::total_cmp`, and
/// back: the map is its own inverse. Negative floats get every bit but the sign
/// flipped, so larger magnitudes sort lower; positive floats are unchanged.
#[inline]
fn total_order_key(bits: i32) -> i32 {
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// [`total_order_key`] over a slice, in place.
#[inline]
fn total_order_keys(bits: &mut [i32]) {
    for b in bits {
        *b = total_order_key(*b);
    }
}

/// Maps u32 (as i32 bits) to i32 with the same order, and back (its own inverse).
#[inline]
fn flip_sign(bits: &mut [i32]) {
    for b in bits {
        *b ^= i32::MIN;
    }
}

#[cfg(test)]
mod tests;
