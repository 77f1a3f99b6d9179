//! The whole sort, written once over [`SortVector`]: in-register blocks of 64, then merge
//! passes of doubling width between the data and a scratch buffer (ping-pong).

use super::merge::merge;
use super::network::{BLOCK, RUN, sort_block};
use super::vector::SortVector;

/// Below this length the scalar path is faster than setting up vectors and scratch.
pub(crate) const SMALL: usize = 64;

/// Sorts `data` ascending with the vector backend `s`.
#[inline(always)]
pub(crate) fn sort_i32<S: SortVector>(s: S, data: &mut [i32]) {
    let n = data.len();
    if n <= SMALL {
        super::scalar_sort_i32(data);
        return;
    }
    #[cfg(test)]
    crate::trace::record(S::BACKEND);
    // Phase 1: every full block of 64 becomes 4 sorted runs of 16; the tail (< 64) is
    // sorted whole, so each 16-aligned piece of it is sorted too.
    let (blocks, tail) = data.as_chunks_mut::<BLOCK>();
    for block in blocks {
        sort_block(s, block);
    }
    tail.sort_unstable();

    // Phase 2: merge runs of width w into runs of 2w, alternating buffers.
    let mut scratch = vec![0i32; n];
    let mut in_scratch = false;
    let mut width = RUN;
    while width < n {
        let (src, dst): (&[i32], &mut [i32]) = if in_scratch {
            (&scratch, &mut *data)
        } else {
            (&*data, &mut scratch)
        };
        merge_pass(s, src, dst, width);
        in_scratch = !in_scratch;
        width *= 2;
    }
    if in_scratch {
        data.copy_from_slice(&scratch);
    }
}

/// Merges each pair of adjacent sorted runs of `width` in `src` into `dst`.
#[inline(always)]
fn merge_pass<S: SortVector>(s: S, src: &[i32], dst: &mut [i32], width: usize) {
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
