//! The whole sort: a radix partition of large inputs into buckets ([`super::radix`]),
//! each bucket merge-sorted here: in-register blocks of 64, then merge passes of doubling
//! width between two buffers (ping-pong).
//!
//! The merge passes run depth-first: each cache-sized chunk is sorted completely before
//! the next, so only the passes wider than a chunk stream the whole bucket through memory.

use super::merge::merge;
use super::network::{BLOCK, RUN, sort_block, sort_block_into};
use super::radix;
use super::vector::{SortElem, SortVector};

/// Up to this length the scalar path is faster than setting up vectors and scratch.
pub(crate) const SMALL: usize = 64;

/// Keys per cache-resident chunk: 16 Ki keys = 64 KiB, plus as much scratch, fits the
/// L2 of every target core (A72: 1 MiB shared, N1: 1 MiB, x86: >= 256 KiB).
pub(crate) const CHUNK: usize = 1 << 14;

/// Which of a sort's two buffers holds its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// The buffer the keys came in.
    Keys,
    /// The other one (the scratch buffer of the same length).
    Other,
}

/// Sorts `data` ascending (by `S::Elem`'s order) with the vector backend `s`.
#[inline(always)]
pub(crate) fn sort<S: SortVector>(s: S, data: &mut [S::Elem]) {
    if data.len() <= SMALL {
        #[cfg(test)]
        crate::trace::record(crate::Backend::Scalar);
        data.sort_unstable();
        return;
    }
    #[cfg(test)]
    crate::trace::record(S::BACKEND);
    let mut scratch = vec![S::Elem::default(); data.len()];
    radix::sort(s, data, &mut scratch);
}

/// Merge-sorts `keys`, leaving the result where `dest` says (`other` has the same length
/// and its contents are overwritten).
///
/// Runs are 64-key blocks, the last one with the rest (< 64 keys) merged into it, so
/// a bucket of 517 keys takes the 3 passes of 512, not 4; likewise the last cache-sized
/// chunk takes the keys after the last whole chunk.
#[inline(always)]
pub(crate) fn merge_sort<S: SortVector>(
    s: S,
    keys: &mut [S::Elem],
    other: &mut [S::Elem],
    dest: Dest,
) {
    let n = keys.len();
    if n <= SMALL {
        keys.sort_unstable();
        if dest == Dest::Other {
            other.copy_from_slice(keys);
        }
        return;
    }
    let chunks = (n / CHUNK).max(1);
    let chunk_len = |c: usize| {
        if c + 1 == chunks {
            n - c * CHUNK
        } else {
            CHUNK
        }
    };
    // Each pass moves the keys to the other buffer. The in-register blocks are written
    // to whichever buffer makes the passes end in `dest`, so no copy is needed after.
    let chunk_passes = passes(RUN, chunk_len(0));
    let end_flips = (chunk_passes + passes(CHUNK, n)) % 2 == 1;
    let start_in_other = end_flips != (dest == Dest::Other);
    // Where every chunk ends. (The last one is up to twice as long, but runs of 256 to
    // 511 blocks all take 8 passes; the copy below keeps the result right should CHUNK
    // or RUN change.)
    let chunk_in_other = start_in_other != (chunk_passes % 2 == 1);
    for c in 0..chunks {
        let range = c * CHUNK..c * CHUNK + chunk_len(c);
        let (chunk, spare) = (&mut keys[range.clone()], &mut other[range]);
        sort_runs(s, chunk, spare, start_in_other);
        let (from, to) = if start_in_other {
            (&mut *spare, &mut *chunk)
        } else {
            (&mut *chunk, &mut *spare)
        };
        let in_other = merge_passes(s, from, to, RUN) != start_in_other;
        match (in_other, chunk_in_other) {
            (true, false) => chunk.copy_from_slice(spare),
            (false, true) => spare.copy_from_slice(chunk),
            _ => {}
        }
    }
    // Then the passes wider than a chunk, over the whole bucket.
    let (from, to) = if chunk_in_other {
        (&mut *other, &mut *keys)
    } else {
        (&mut *keys, &mut *other)
    };
    let in_other = merge_passes(s, from, to, CHUNK) != chunk_in_other;
    debug_assert_eq!(in_other, dest == Dest::Other, "pass parity");
    match (in_other, dest) {
        (true, Dest::Keys) => keys.copy_from_slice(other),
        (false, Dest::Other) => other.copy_from_slice(keys),
        _ => {}
    }
}

/// Sorts the runs of `chunk` (at least 64 keys) for the merge passes, in place or into
/// `spare` (same length): each 64-key block, the last one together with the tail.
#[inline(always)]
fn sort_runs<S: SortVector>(s: S, chunk: &mut [S::Elem], spare: &mut [S::Elem], into_spare: bool) {
    let (blocks, tail) = chunk.as_chunks_mut::<BLOCK>();
    let plain = blocks.len() - usize::from(!tail.is_empty());
    if into_spare {
        let (spare_blocks, _) = spare.as_chunks_mut::<BLOCK>();
        for (block, out) in blocks[..plain].iter().zip(spare_blocks) {
            sort_block_into(s, block, out);
        }
    } else {
        for block in &mut blocks[..plain] {
            sort_block(s, block);
        }
    }
    if tail.is_empty() {
        return;
    }
    // The last block and the tail (padded with the largest element, which the padded
    // block sort leaves at its end), each sorted, then merged.
    let mut last = [S::Elem::MAX; BLOCK];
    sort_block_into(s, &blocks[plain], &mut last);
    let mut rest = [S::Elem::MAX; BLOCK];
    rest[..tail.len()].copy_from_slice(tail);
    sort_block(s, &mut rest);
    let rest = &rest[..tail.len()];
    let out = if into_spare { spare } else { chunk };
    merge(s, &last, rest, &mut out[plain * BLOCK..]);
}

/// Number of passes that turn runs of `width` into one run of `n`: runs start at
/// multiples of the width and the last one takes the rest, so runs of `n / width`
/// (rounded down) halve each pass.
fn passes(mut width: usize, n: usize) -> u32 {
    let mut count = 0;
    while n / width >= 2 {
        width *= 2;
        count += 1;
    }
    count
}

/// Merges runs of `width` in `a` (ping-ponging with `b`, same length) until one run
/// remains. Returns true if the result ended in `b`.
#[inline(always)]
fn merge_passes<S: SortVector>(
    s: S,
    a: &mut [S::Elem],
    b: &mut [S::Elem],
    mut width: usize,
) -> bool {
    let n = a.len();
    let mut in_b = false;
    while n / width >= 2 {
        let (src, dst) = if in_b {
            (&mut *b, &mut *a)
        } else {
            (&mut *a, &mut *b)
        };
        merge_pass(s, src, dst, width);
        in_b = !in_b;
        width *= 2;
    }
    in_b
}

/// Merges each pair of adjacent sorted runs of `src` into `dst`: run `k` is
/// `[k * width, (k + 1) * width)`, except that the last of the `n / width` runs ends at
/// `n`. An odd number of runs ends in a group of three (the last two merged first, the
/// result copied back into `src` and merged with the third), so the next pass again
/// has `n / (2 * width)` runs.
#[inline(always)]
fn merge_pass<S: SortVector>(s: S, src: &mut [S::Elem], dst: &mut [S::Elem], width: usize) {
    let n = src.len();
    let runs = n / width;
    debug_assert!(runs >= 2, "a pass needs two runs");
    let run_end = |k: usize| if k + 1 >= runs { n } else { (k + 1) * width };
    // One call of `merge` in the loop (it is inlined whole, so each call site costs
    // code size and compile time).
    let mut tail_merged = false;
    let mut k = 0;
    while k + 1 < runs {
        let group_of_three = runs - k == 3;
        let (start, mid, end) = if group_of_three && !tail_merged {
            // The last two runs first; back into `src` as one run.
            ((k + 1) * width, (k + 2) * width, n)
        } else if group_of_three {
            (k * width, (k + 1) * width, n)
        } else {
            (k * width, run_end(k), run_end(k + 1))
        };
        merge(s, &src[start..mid], &src[mid..end], &mut dst[start..end]);
        if group_of_three && !tail_merged {
            src[start..].copy_from_slice(&dst[start..]);
            tail_merged = true;
        } else {
            k += 2;
        }
    }
}
