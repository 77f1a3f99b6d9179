//! The in-register phase: 64 keys in 16 vectors, columns sorted by an optimal 16-input
//! sorting network, then transposed into 4 sorted runs of 16.

use super::merge::merge_bitonic;
use super::vector::SortVector;

/// Elements per in-register block: 16 vectors of 4 lanes (the NEON-MS paper finds 16
/// registers optimal: all 32 NEON registers stay in use without spilling).
pub(crate) const BLOCK: usize = 64;
/// Length of the sorted runs the in-register phase leaves behind: the whole block.
pub(crate) const RUN: usize = BLOCK;

/// Defines [`NETWORK_16`] and `sort_columns` from one comparator list, so the table the
/// tests verify is the code that runs. The comparators are emitted as straight-line
/// code with constant indices (a loop over the table is not unrolled by LLVM at 60
/// iterations, and would keep the 16 vectors in memory instead of registers).
macro_rules! network {
    ($(($i:literal, $j:literal)),* $(,)?) => {
        /// Green's 16-input sorting network: 60 comparators in 10 layers (the fewest
        /// known). Verified over all 2^16 0/1 inputs by `network_sorts_all_01_inputs`.
        #[cfg_attr(not(test), allow(dead_code))]
        pub(crate) const NETWORK_16: [(usize, usize); 60] = [$(($i, $j)),*];

        /// Sorts the 4 columns of `r` (lane `l` of `r[0..16]`) with [`NETWORK_16`].
        #[inline(always)]
        fn sort_columns<S: SortVector>(s: S, r: &mut [S::V; 16]) {
            $(
                (r[$i], r[$j]) = s.minmax(r[$i], r[$j]);
            )*
        }
    };
}

#[rustfmt::skip]
network![
    (0, 13), (1, 12), (2, 15), (3, 14), (4, 8), (5, 6), (7, 11), (9, 10),
    (0, 5), (1, 7), (2, 9), (3, 4), (6, 13), (8, 14), (10, 15), (11, 12),
    (0, 1), (2, 3), (4, 5), (6, 8), (7, 9), (10, 11), (12, 13), (14, 15),
    (0, 2), (1, 3), (4, 10), (5, 11), (6, 7), (8, 9), (12, 14), (13, 15),
    (1, 2), (3, 12), (4, 6), (5, 7), (8, 10), (9, 11), (13, 14),
    (1, 4), (2, 6), (5, 8), (7, 10), (9, 13), (11, 14),
    (2, 4), (3, 6), (9, 12), (11, 13),
    (3, 5), (6, 8), (7, 9), (10, 12),
    (3, 4), (5, 6), (7, 8), (9, 10), (11, 12),
    (6, 7), (8, 9),
];

/// Sorts `block` in registers: column sort, transpose (4 runs of 16), then bitonic
/// merges 16 + 16 -> 32 (twice) and 32 + 32 -> 64.
#[inline(always)]
pub(crate) fn sort_block<S: SortVector>(s: S, block: &mut [S::Elem; BLOCK]) {
    let sorted = sorted_block(s, block);
    store_block(s, sorted, block);
}

/// [`sort_block`] reading `src` and writing the sorted block to `dst` (the merge driver
/// uses it to start in whichever buffer makes its passes end where it wants them).
#[inline(always)]
pub(crate) fn sort_block_into<S: SortVector>(
    s: S,
    src: &[S::Elem; BLOCK],
    dst: &mut [S::Elem; BLOCK],
) {
    store_block(s, sorted_block(s, src), dst);
}

/// The 64 keys of `block`, sorted, in 16 vectors: (the low 32, the high 32).
#[inline(always)]
fn sorted_block<S: SortVector>(s: S, block: &[S::Elem; BLOCK]) -> ([S::V; 8], [S::V; 8]) {
    let (quads, _) = block.as_chunks::<4>();
    // Plain loops, not `array::from_fn` (see `merge_bitonic`).
    let mut r = [s.load(&quads[0]); 16];
    for i in 1..16 {
        r[i] = s.load(&quads[i]);
    }
    sort_columns(s, &mut r);
    // Column l is r[0][l], r[1][l], ..., r[15][l]. Transposing each 4 x 4 group puts
    // column l's keys 4m..4m+4 into vector 4m + l.
    for g in 0..4 {
        let t = s.transpose([r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]]);
        r[4 * g..4 * g + 4].copy_from_slice(&t);
    }
    let run = |l: usize| -> [S::V; 4] { [r[l], r[4 + l], r[8 + l], r[12 + l]] };
    let (lo01, hi01) = merge_bitonic(s, run(0), run(1));
    let (lo23, hi23) = merge_bitonic(s, run(2), run(3));
    let cat = |lo: [S::V; 4], hi: [S::V; 4]| -> [S::V; 8] {
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
    };
    merge_bitonic(s, cat(lo01, hi01), cat(lo23, hi23))
}

/// Stores the sorted block `(low 32, high 32)` to `block`.
#[inline(always)]
fn store_block<S: SortVector>(
    s: S,
    (lo, hi): ([S::V; 8], [S::V; 8]),
    block: &mut [S::Elem; BLOCK],
) {
    let (quads, _) = block.as_chunks_mut::<4>();
    let (low, high) = quads.split_at_mut(8);
    for i in 0..8 {
        s.store(lo[i], &mut low[i]);
        s.store(hi[i], &mut high[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::NETWORK_16;

    /// The 0-1 principle: a comparator network sorts every input iff it sorts every
    /// sequence of 0s and 1s.
    #[test]
    fn network_sorts_all_01_inputs() {
        for bits in 0u32..1 << 16 {
            let mut v: [u8; 16] = core::array::from_fn(|i| ((bits >> i) & 1) as u8);
            for &(i, j) in NETWORK_16.iter() {
                assert!(i < j);
                if v[i] > v[j] {
                    v.swap(i, j);
                }
            }
            assert!(v.is_sorted(), "input {bits:016b} -> {v:?}");
        }
    }
}
