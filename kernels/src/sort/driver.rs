//! The whole sort, written once over [`SortVector`]: in-register blocks of 64, then merge
//! passes of doubling width between the data and a scratch buffer (ping-pong).
//!
//! The passes run depth-first: each cache-sized chunk is sorted completely before the
//! next, so only the passes wider than a chunk stream the whole array through memory.

use super::merge::merge;
use super::network::{BLOCK, RUN, sort_block};
use super::vector::SortVector;

/// Up to this length the scalar path is faster than setting up vectors and scratch.
pub(crate) const SMALL: usize = 64;

/// Keys per cache-resident chunk: 16 Ki keys = 64 KiB, plus as much scratch, fits the
/// L2 of every target core (A72: 1 MiB shared, N1: 1 MiB, x86: >= 256 KiB).
const CHUNK: usize = 1 << 14;

/// Sorts `data` ascending (by `S::Elem`'s order) with the vector backend `s`.
#[inline(always)]
pub(crate) fn sort<S: SortVector>(s: S, data: &mut [S::Elem]) {
    let n = data.len();
    if n <= SMALL {
        #[cfg(test)]
        crate::trace::record(crate::Backend::Scalar);
        data.sort_unstable();
        return;
    }
    #[cfg(test)]
    crate::trace::record(S::BACKEND);
    let mut scratch = vec![S::Elem::default(); n];

    // Chunks first: each becomes one sorted run, ending in `data` or `scratch` according
    // to the parity of its number of passes; the last (shorter) chunk is moved to where
    // the full ones ended.
    let full_chunk_in_scratch = passes(RUN, CHUNK.min(n)) % 2 == 1;
    for (chunk, spare) in data.chunks_mut(CHUNK).zip(scratch.chunks_mut(CHUNK)) {
        let (blocks, tail) = chunk.as_chunks_mut::<BLOCK>();
        for block in blocks {
            sort_block(s, block);
        }
        // The tail (< 64) is sorted whole, so each 16-aligned piece of it is sorted too.
        tail.sort_unstable();
        let in_spare = merge_passes(s, chunk, spare, RUN);
        match (in_spare, full_chunk_in_scratch) {
            (true, false) => chunk.copy_from_slice(spare),
            (false, true) => spare.copy_from_slice(chunk),
            _ => {}
        }
    }

    // Then the passes wider than a chunk, over the whole array.
    let in_scratch = if full_chunk_in_scratch {
        !merge_passes(s, &mut scratch, data, CHUNK)
    } else {
        merge_passes(s, data, &mut scratch, CHUNK)
    };
    if in_scratch {
        data.copy_from_slice(&scratch);
    }
}

/// Number of doubling passes that turn runs of `width` into one run of `n`.
fn passes(mut width: usize, n: usize) -> u32 {
    let mut count = 0;
    while width < n {
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
    while width < n {
        let (src, dst): (&[S::Elem], &mut [S::Elem]) =
            if in_b { (&*b, &mut *a) } else { (&*a, &mut *b) };
        merge_pass(s, src, dst, width);
        in_b = !in_b;
        width *= 2;
    }
    in_b
}

/// Merges each pair of adjacent sorted runs of `width` in `src` into `dst`.
#[inline(always)]
fn merge_pass<S: SortVector>(s: S, src: &[S::Elem], dst: &mut [S::Elem], width: usize) {
    let n = src.len();
    let mut start = 0;
    while start < n {
        let mid = (start + width).min(n);
        let end = (start + 2 * width).min(n);
        if mid == end {
            dst[start..end].copy_from_slice(&src[start..end]);
        } else {
            merge(s, &src[start..mid], &src[mid..end], &mut dst[start..end]);
        }
        start = end;
    }
}
