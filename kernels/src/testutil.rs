//! Helpers shared by the kernels' tests.

/// A small deterministic xorshift generator, so large test inputs need no proptest
/// shrinking and reproduce exactly.
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
