//! Sorting: a radix partition ahead of the vectorised merge sort of NEON-MS ("A Hybrid
//! Vectorized Merge Sort on ARM NEON").
//!
//! 1. Radix partition (`radix.rs`): an input of more than 1,024 keys is split by its keys'
//!    leading bits (from the highest bit in which they differ) into buckets of about 128
//!    keys, partitions of partitions where buckets stay large, so the merges below run a
//!    pass or two per bucket in cache instead of log2(n / 64) passes over the input.
//! 2. In-register phase (`network.rs`): 64 keys in 16 vectors, the 4 columns sorted by an
//!    optimal 16-input network of `min`/`max`, then transposed into 4 sorted runs of 16.
//! 3. Merge phase (`merge.rs`): runs merged pairwise, doubling in width, between the data
//!    and a scratch buffer, by a vectorised bitonic 16 + 16 merge (optionally interleaved
//!    with a branchless scalar merge from the back: the paper's hybrid, `HYBRID_BACK`).
//!
//! The algorithm is written once over `SortVector`: i32 keys, u32 keys (with
//! unsigned lane operations) and (key, index) pairs held in two registers per 4 pairs.
//! f32 is mapped onto i32 by an order-preserving bijection applied in place before and
//! after, in [`f32::total_cmp`] order (-NaN < -inf < ... < -0.0 < +0.0 < ... < +inf <
//! +NaN).
//!
//! The sorts allocate one scratch buffer of the input's length, the partition's counters
//! (up to 2^16 u32) and a work list of buckets; inputs of at most 64 keys are sorted in
//! place by the scalar path and allocate nothing, nor do `merge_i32` and `sort64_i32`.

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
pub(crate) use merge::merge;
pub(crate) use network::sort_block;
pub(crate) use vector::Pair;

/// Sorts `data` ascending.
pub fn sort_i32(data: &mut [i32]) {
    sort_i32_dispatch(data);
}

/// Sorts `data` ascending.
pub fn sort_u32(data: &mut [u32]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::sort::sort_u32(data);
    #[cfg(tandem_sse2)]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        return sse41.sort_u32(data);
    }
    #[allow(unreachable_code)]
    data.sort_unstable()
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
/// Each (key, index) pair is packed as one (order-preserving key, index) element and
/// sorted by the same radix partition and vector merges as the keys, on pairs held in
/// two registers per 4 (keys, indices), compared by key, then index. Allocates
/// `16 * len` bytes, and the partition's counters (up to 256 KiB) and work list.
///
/// Errors if the two slices differ in length.
pub fn sort_pairs_f32(keys: &mut [f32], idx: &mut [u32]) -> Result<(), crate::KernelError> {
    crate::KernelError::check_len("idx", idx.len(), keys.len())?;
    let mut pairs: Vec<Pair> = keys
        .iter()
        .zip(idx.iter())
        .map(|(&k, &i)| Pair {
            key: total_order_key(k.to_bits() as i32),
            idx: i,
        })
        .collect();
    sort_pairs_dispatch(&mut pairs);
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
    #[cfg(tandem_sse2)]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        return sse41.sort64_i32(block);
    }
    #[allow(unreachable_code)]
    block.sort_unstable()
}

/// Merges sorted `a` and sorted `b` into `out`, sorted (the sort's vector merge: 16 + 16
/// keys a step). If `a` or `b` is not sorted, what `out` holds is unspecified. Allocates
/// nothing.
///
/// Errors if `out.len() != a.len() + b.len()`.
pub fn merge_i32(a: &[i32], b: &[i32], out: &mut [i32]) -> Result<(), crate::KernelError> {
    crate::KernelError::check_len("out", out.len(), a.len() + b.len())?;
    merge_i32_dispatch(a, b, out);
    Ok(())
}

fn merge_i32_dispatch(a: &[i32], b: &[i32], out: &mut [i32]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::sort::merge_i32(a, b, out);
    #[cfg(tandem_sse2)]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        return sse41.merge_i32(a, b, out);
    }
    #[allow(unreachable_code)]
    let (mut i, mut j) = (0, 0);
    #[allow(unreachable_code)]
    for slot in out.iter_mut() {
        let take_a = j == b.len() || (i < a.len() && a[i] <= b[j]);
        *slot = if take_a { a[i] } else { b[j] };
        (i, j) = if take_a { (i + 1, j) } else { (i, j + 1) };
    }
}

/// The backend [`sort_i32`] and friends use for inputs longer than 64 keys on this CPU.
pub fn sort_backend() -> Backend {
    #[cfg(tandem_neon)]
    return <crate::arch::aarch64::sort::Neon as vector::Lanes>::BACKEND;
    #[cfg(tandem_sse2)]
    if crate::arch::x86_64::sort::Sse41::new().is_some() {
        return <crate::arch::x86_64::sort::Sse41 as vector::Lanes>::BACKEND;
    }
    #[allow(unreachable_code)]
    Backend::Scalar
}

fn sort_i32_dispatch(data: &mut [i32]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::sort::sort_i32(data);
    #[cfg(tandem_sse2)]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        return sse41.sort_i32(data);
    }
    #[allow(unreachable_code)]
    scalar_sort_i32(data)
}

fn sort_pairs_dispatch(data: &mut [Pair]) {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::sort::sort_pairs(data);
    #[cfg(tandem_sse2)]
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

#[cfg(test)]
mod tests;
