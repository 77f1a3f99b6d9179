//! The radix partition ahead of the merges: a large input is split by its keys' leading
//! bits into buckets of a few hundred keys, each of which is then merge-sorted (so the
//! vectorised merges run a handful of passes in cache instead of log2(n / 64) passes over
//! the whole input).
//!
//! One partition is a most-significant-digit radix pass: a histogram of up to 11 bits,
//! then a scatter into the other buffer. The digit starts at the highest bit in which the
//! bucket's keys differ (found by an OR/AND fold first), so narrow key ranges and sorted,
//! reversed or few-valued inputs split as well as uniform ones, and a bucket whose keys are
//! all equal is done. A bucket still larger than [`PARTITION_MIN`] is partitioned again on
//! the next bits, at most [`MAX_DEPTH`] deep; then it is merge-sorted, so the worst case is
//! the merge sort plus a few linear passes.

use super::driver::{Dest, merge_sort};
use super::vector::{Pair, SortVector};

/// The order-preserving u32 image of a sort element's key: `a.radix_key() <
/// b.radix_key()` implies `a < b`.
pub(crate) trait RadixKey: Copy {
    /// Whether equal radix keys mean equal elements (no payload to order by).
    const WHOLE: bool;
    /// The largest element (the merge pads short blocks with it).
    const MAX: Self;
    fn radix_key(self) -> u32;
}

impl RadixKey for i32 {
    const WHOLE: bool = true;
    const MAX: Self = i32::MAX;
    #[inline(always)]
    fn radix_key(self) -> u32 {
        (self as u32) ^ 0x8000_0000
    }
}

impl RadixKey for Pair {
    const WHOLE: bool = false;
    const MAX: Self = Pair {
        key: i32::MAX,
        idx: u32::MAX,
    };
    #[inline(always)]
    fn radix_key(self) -> u32 {
        self.key.radix_key()
    }
}

/// Widest digit: a histogram of 2^11 u32 counters (8 KiB) stays in L1, and 2,048 write
/// streams are about as many as a scatter keeps fast.
const MAX_BITS: u32 = 11;
/// Above this many keys (beyond the caches) a digit has at most [`LARGE_BITS`] bits: a
/// scatter to 2^11 places in memory is slower than one to 2^8 and a second partition in
/// cache (measured).
const LARGE_KEYS: usize = 1 << 21;
const LARGE_BITS: u32 = 8;
/// Buckets up to this length are merge-sorted; longer ones are partitioned.
const PARTITION_MIN: usize = 1 << 12;
/// A digit is as wide as it takes to make buckets of about 2^9 keys on uniform keys.
const TARGET_LOG2: u32 = 9;
/// Partitions of partitions at most this deep (each consumes at least 3 bits).
const MAX_DEPTH: u32 = 4;

/// Sorts `data` (longer than [`super::driver::SMALL`]) with `scratch` (same length,
/// overwritten) as the other buffer.
///
/// Partitions alternate between the two buffers: a bucket `depth` partitions deep has
/// its keys in `data` when `depth` is even. Buckets are kept on a work list rather than
/// sorted by recursion, so the whole sort stays in one function (on x86 the vector code
/// must be inlined into the caller that enables SSE4.1).
#[inline(always)]
pub(crate) fn sort<S: SortVector>(s: S, data: &mut [S::Elem], scratch: &mut [S::Elem]) {
    // Every bucket, partitioned or not, goes through this list, so `merge_sort` is
    // inlined at one place only.
    let mut pending: Vec<(usize, usize, u32)> = vec![(0, data.len(), 0)];
    let mut ends = [0u32; 1 << MAX_BITS];
    while let Some((start, end, depth)) = pending.pop() {
        let (keys, other, dest) = sides(data, scratch, start..end, depth);
        let partitioned = should_partition(keys.len(), depth);
        let digit = if partitioned {
            Digit::for_keys(keys)
        } else {
            None
        };
        let Some(digit) = digit else {
            if partitioned && S::Elem::WHOLE {
                // Every key is the same: already sorted.
                if dest == Dest::Other {
                    other.copy_from_slice(keys);
                }
            } else {
                merge_sort(s, keys, other, dest);
            }
            continue;
        };
        partition(keys, other, digit, &mut ends);
        // Pushed in descending order, so popped in ascending order.
        let mut to = keys.len();
        for &from in ends[..digit.buckets()].iter().rev().skip(1).chain([&0]) {
            let from = from as usize;
            if to > from {
                pending.push((start + from, start + to, depth + 1));
            }
            to = from;
        }
    }
}

/// Whether a bucket of `n` keys, `depth` partitions deep, is partitioned (else it is
/// merge-sorted).
fn should_partition(n: usize, depth: u32) -> bool {
    n > PARTITION_MIN && depth < MAX_DEPTH && u32::try_from(n).is_ok()
}

/// (the keys of `range`, the other buffer's same range, where the sorted result goes
/// seen from the keys) for a bucket `depth` partitions deep.
#[inline(always)]
fn sides<'a, E>(
    data: &'a mut [E],
    scratch: &'a mut [E],
    range: core::ops::Range<usize>,
    depth: u32,
) -> (&'a mut [E], &'a mut [E], Dest) {
    if depth.is_multiple_of(2) {
        (&mut data[range.clone()], &mut scratch[range], Dest::Keys)
    } else {
        (&mut scratch[range.clone()], &mut data[range], Dest::Other)
    }
}

/// The bits of the radix key one partition splits on.
#[derive(Clone, Copy, Debug)]
struct Digit {
    shift: u32,
    bits: u32,
}

impl Digit {
    /// The digit for `keys` (more than [`PARTITION_MIN`] of them): it starts at the
    /// highest bit in which they differ and is wide enough for buckets of about
    /// 2^[`TARGET_LOG2`] keys, at most [`MAX_BITS`]. None if all keys are equal.
    fn for_keys<E: RadixKey>(keys: &[E]) -> Option<Self> {
        let (any, all) = keys.iter().fold((0u32, u32::MAX), |(any, all), k| {
            let key = k.radix_key();
            (any | key, all & key)
        });
        let varying = any & !all;
        if varying == 0 {
            return None;
        }
        let top = 32 - varying.leading_zeros();
        let wanted = keys.len().ilog2().saturating_sub(TARGET_LOG2).max(1);
        let cap = if keys.len() > LARGE_KEYS {
            LARGE_BITS
        } else {
            MAX_BITS
        };
        let bits = wanted.min(cap).min(top);
        Some(Self {
            shift: top - bits,
            bits,
        })
    }

    fn buckets(self) -> usize {
        1 << self.bits
    }

    #[inline(always)]
    fn of<E: RadixKey>(self, key: E) -> usize {
        ((key.radix_key() >> self.shift) as usize & (self.buckets() - 1)) & ((1 << MAX_BITS) - 1)
    }
}

/// Scatters `keys` into `out` grouped by `digit`, in ascending digit order, keeping
/// their order within a group. Leaves in `ends[d]` the end of digit `d`'s group.
#[inline(always)]
fn partition<E: RadixKey>(
    keys: &[E],
    out: &mut [E],
    digit: Digit,
    ends: &mut [u32; 1 << MAX_BITS],
) {
    debug_assert!(keys.len() == out.len() && u32::try_from(keys.len()).is_ok());
    let mut counts = [0u32; 1 << MAX_BITS];
    for &key in keys {
        counts[digit.of(key)] += 1;
    }
    // `ends` holds each group's next free slot, starting at its first.
    let mut start = 0u32;
    for (next, count) in ends.iter_mut().zip(counts) {
        *next = start;
        start += count;
    }
    for &key in keys {
        let slot = &mut ends[digit.of(key)];
        out[*slot as usize] = key;
        *slot += 1;
    }
}
