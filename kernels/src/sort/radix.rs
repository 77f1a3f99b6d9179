//! The radix partition ahead of the merges: a large input is split by its keys' leading
//! bits into buckets of about 128 keys, each of which is then merge-sorted (so the
//! vectorised merges run a pass or two in cache instead of log2(n / 64) passes over the
//! whole input).
//!
//! One partition is a most-significant-digit radix pass: a histogram of up to 13 bits
//! (16 for skewed keys, see [`choose_and_count`]), then a scatter into the other buffer. The digit starts at the highest bit in which the
//! bucket's keys differ (found by an OR/AND fold first), so narrow key ranges and sorted,
//! reversed or few-valued inputs split as well as uniform ones, and a bucket whose keys are
//! all equal is done. A bucket still larger than [`PARTITION_MIN`] is partitioned again on
//! the next bits, at most [`MAX_DEPTH`] deep; then it is merge-sorted, so the worst case is
//! the merge sort plus a few linear passes.

use super::driver::{Dest, merge_sort};
use super::vector::{SortElem, SortVector};

/// Widest digit of a bucket in cache: 2^13 u32 counters (32 KiB) and as many write
/// streams (1M uniform keys into buckets of 128: measured faster than 2^11 or 2^12
/// streams and a third merge pass).
const MAX_BITS: u32 = 13;
/// Above this many keys the input is beyond the caches, and a digit of a bucket in memory
/// has at most [`LARGE_BITS`] bits: a scatter to more places than the data TLB holds
/// pages slows down 3x (measured on x86: 0.95 ns a key to 64 places, 3.3 to 256, 3.8 to
/// 4,096), and 2^8 with a second partition in cache measured fastest.
const LARGE_KEYS: usize = 1 << 21;
/// In an input beyond the caches, a bucket up to this many keys (512 KiB of u32) is taken
/// to be in cache; a larger one was scattered to memory and gets [`LARGE_BITS`] too.
const CACHED_KEYS: usize = 1 << 17;
const LARGE_BITS: u32 = 8;
/// A bucket (the whole input first) of at least this many keys whose sample is skewed is
/// counted on a 16-bit
/// digit, and split on as many of those bits as keep its non-empty buckets within the
/// scatter's streams: keys whose leading bits vary little (floats, whose exponents
/// bunch) then split in one pass instead of two.
const WIDE_MIN: usize = 1 << 18;
const WIDE_BITS: u32 = 16;
/// Buckets up to this length are merge-sorted; longer ones are partitioned (measured a
/// little faster than 2^12 on floats, whose buckets are uneven).
const PARTITION_MIN: usize = 1 << 10;
/// A digit is as wide as it takes to make buckets of about 2^7 keys on uniform keys (two
/// in-register blocks and one merge pass).
const TARGET_LOG2: u32 = 7;
/// Partitions of partitions at most this deep (each consumes at least 3 bits, or all the
/// bits in which its keys still differ).
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
    let mut counts: Vec<u32> = Vec::new();
    let beyond_cache = data.len() > LARGE_KEYS;
    while let Some((start, end, depth)) = pending.pop() {
        let (keys, other, dest) = sides(data, scratch, start..end, depth);
        let partitioned = should_partition(keys.len(), depth);
        let top = if partitioned { varying_top(keys) } else { None };
        let Some(top) = top else {
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
        let digit = choose_and_count(keys, top, beyond_cache, &mut counts);
        // SAFETY: `choose_and_count` left in `counts` the histogram of `keys` on
        // `digit`.
        unsafe { scatter(keys, other, digit, &mut counts) };
        // Pushed in descending order, so popped in ascending order.
        let mut to = keys.len();
        for &from in counts.iter().rev().skip(1).chain([&0]) {
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
    /// The `bits` (at most `top`) below bit `top` (counted from 1).
    fn below(top: u32, bits: u32) -> Self {
        let bits = bits.min(top);
        Self {
            shift: top - bits,
            bits,
        }
    }

    fn buckets(self) -> usize {
        1 << self.bits
    }

    #[inline(always)]
    fn of<E: SortElem>(self, key: E) -> usize {
        (key.radix_key() >> self.shift) as usize & (self.buckets() - 1)
    }
}

/// The highest bit (counted from 1) in which `keys` differ; None if they are all equal.
fn varying_top<E: SortElem>(keys: &[E]) -> Option<u32> {
    let (any, all) = keys.iter().fold((0u32, u32::MAX), |(any, all), k| {
        let key = k.radix_key();
        (any | key, all & key)
    });
    let varying = any & !all;
    (varying != 0).then(|| 32 - varying.leading_zeros())
}

/// Chooses the digit that splits `keys` (more than [`PARTITION_MIN`] of them, differing
/// in bit `top`) and leaves its per-bucket counts in `counts`.
///
/// The digit starts at bit `top`. It has enough bits for buckets of about
/// 2^[`TARGET_LOG2`] uniform keys, at most the scatter's streams; an input of
/// [`WIDE_MIN`] keys or more whose sample is [`skewed`] is counted on [`WIDE_BITS`] bits
/// instead and split on the widest prefix of them whose non-empty buckets fit the
/// streams, so skewed keys get a wider digit.
fn choose_and_count<E: SortElem>(
    keys: &[E],
    top: u32,
    beyond_cache: bool,
    counts: &mut Vec<u32>,
) -> Digit {
    let n = keys.len();
    let streams_log2 = if beyond_cache && n > CACHED_KEYS {
        LARGE_BITS
    } else {
        MAX_BITS
    };
    let uniform_bits = n.ilog2().saturating_sub(TARGET_LOG2).clamp(1, streams_log2);
    let plain = Digit::below(top, uniform_bits);
    if n < WIDE_MIN || !skewed(keys, plain, counts) {
        histogram(keys, plain, counts);
        return plain;
    }
    let wide = Digit::below(top, WIDE_BITS);
    histogram(keys, wide, counts);
    // At most as many buckets as uniform keys would fill, at least that many bits.
    let streams = 1usize << uniform_bits;
    let bits = (uniform_bits.min(wide.bits)..=wide.bits)
        .rev()
        .find(|&bits| non_empty_at_most(counts, wide.bits - bits, streams))
        .expect("the narrowest candidate has no more buckets than streams");
    let drop = wide.bits - bits;
    // Sum each group of 2^drop counters into one.
    for group in 0..counts.len() >> drop {
        counts[group] = counts[group << drop..(group + 1) << drop].iter().sum();
    }
    counts.truncate(counts.len() >> drop);
    Digit::below(top, bits)
}

/// Whether a strided sample of 1,024 of `keys` crowds one bucket of `digit`: more than
/// 8 times the share of a bucket under uniform keys (and more than 16 keys). Uniform
/// keys stay well below (the wide count would only cost time); floats' bunched
/// exponents put a quarter of them or more in one. Uses `counts` as its tally.
fn skewed<E: SortElem>(keys: &[E], digit: Digit, counts: &mut Vec<u32>) -> bool {
    const SAMPLE: usize = 1024;
    counts.clear();
    counts.resize(digit.buckets(), 0);
    let limit = (8 * SAMPLE / digit.buckets()).max(16) as u32;
    let stride = (keys.len() / SAMPLE).max(1);
    for &key in keys.iter().step_by(stride).take(SAMPLE) {
        let count = &mut counts[digit.of(key)];
        *count += 1;
        if *count > limit {
            return true;
        }
    }
    false
}

/// Whether grouping `counts` by 2^`drop` leaves at most `limit` non-empty groups.
fn non_empty_at_most(counts: &[u32], drop: u32, limit: usize) -> bool {
    let mut seen = 0;
    let mut last = usize::MAX;
    for (i, _) in counts.iter().enumerate().filter(|&(_, &c)| c > 0) {
        let group = i >> drop;
        if group != last {
            last = group;
            seen += 1;
            if seen > limit {
                return false;
            }
        }
    }
    true
}

/// Counts `keys` per bucket of `digit` into `counts` (resized to the buckets).
#[inline(always)]
fn histogram<E: SortElem>(keys: &[E], digit: Digit, counts: &mut Vec<u32>) {
    counts.clear();
    counts.resize(digit.buckets(), 0);
    for &key in keys {
        counts[digit.of(key)] += 1;
    }
}

/// Scatters `keys` into `out` grouped by `digit`, in ascending digit order, keeping
/// their order within a group, given each group's size in `counts`; leaves there the end
/// of each group instead.
///
/// Not inlined: apart from the vector code its loop keeps its pointers in registers
/// (inlined, it spilled them: 17 aarch64 instructions a key).
///
/// # Safety
///
/// `counts[d]` must be the number of `keys` whose `digit` is `d`, for every `d` (as
/// [`histogram`] leaves them, and `choose_and_count`'s grouping of a wider histogram).
/// (The lengths, and that the counts add up to `keys.len()`, are checked here.)
#[inline(never)]
unsafe fn scatter<E: SortElem>(keys: &[E], out: &mut [E], digit: Digit, counts: &mut [u32]) {
    assert!(keys.len() == out.len() && counts.len() == digit.buckets());
    // Each counter becomes its group's next free slot, starting at its first.
    let mut start = 0usize;
    for next in counts.iter_mut() {
        let count = *next;
        *next = start as u32;
        start += count as usize;
    }
    assert!(start == keys.len() && u32::try_from(start).is_ok());
    for &key in keys {
        // SAFETY: `Digit::of` masks to `digit.buckets() - 1`, and `counts` has
        // `digit.buckets()` entries (asserted).
        let slot = unsafe { counts.get_unchecked_mut(digit.of(key)) };
        // SAFETY: by the caller's promise group d's slots run from the sum of the
        // counts before it to that plus its own count, all below the sum of all counts,
        // `keys.len()` (asserted, and below 2^32 so no slot wraps), which is `out.len()`
        // (asserted); each of the group's keys advances its slot once, so no slot passes
        // its group's end.
        unsafe { *out.get_unchecked_mut(*slot as usize) = key };
        *slot += 1;
    }
}
