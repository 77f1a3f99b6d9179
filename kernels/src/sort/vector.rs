//! The handful of 4 x i32 vector operations the sort is written in, implemented once per
//! ISA (`arch/aarch64/sort.rs`, `arch/x86_64/sort.rs`).
//!
//! An implementor is a zero-sized token whose existence proves that the instructions are
//! available, so every method is safe.

/// Vector operations on 4 lanes of i32.
pub(crate) trait SortVector: Copy {
    /// Which backend this is (recorded by test builds).
    const BACKEND: crate::Backend;
    /// Scalar back-merge steps interleaved with each 16-key vector merge step (the
    /// NEON-MS hybrid); 0 merges with vectors only. Chosen per backend by measurement,
    /// see BENCHMARKS.md.
    const HYBRID_BACK: usize;
    /// A 128-bit vector of 4 i32 lanes.
    type V: Copy;
    /// Loads 4 lanes.
    fn load(self, src: &[i32; 4]) -> Self::V;
    /// Stores 4 lanes.
    fn store(self, v: Self::V, dst: &mut [i32; 4]);
    /// Lane-wise minimum.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lanes in reverse order: `[v3, v2, v1, v0]`.
    fn reverse(self, v: Self::V) -> Self::V;
    /// Transposes a 4 x 4 block: lane `j` of output `i` is lane `i` of input `j`.
    fn transpose(self, r: [Self::V; 4]) -> [Self::V; 4];
    /// Sorts each of `x` and `y` within itself, given that each holds a bitonic sequence
    /// of 4 (the last two levels of a bitonic merge: lane distance 2, then 1).
    fn sort_bitonic_lanes(self, x: Self::V, y: Self::V) -> (Self::V, Self::V);
}
