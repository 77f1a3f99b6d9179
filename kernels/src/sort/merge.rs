//! The merge phase: two sorted runs into one by a vectorised bitonic merge from the front
//! (16 + 16 keys per step), optionally interleaved with NEON-MS's branchless scalar merge
//! from the back (one key per step, `HYBRID_BACK` per vector step) so the SIMD and the
//! integer pipelines work at once. Both backends run without the back merge today
//! (BENCHMARKS.md); the tests run it.
//!
//! The front produces exactly the `front` smallest keys and the back exactly the
//! `n - front` largest, so the two never write the same slot. Elements that compare equal
//! are identical (keys carry no payload; pairs compare by key, then index), so the split
//! is exact even with duplicates.

use super::vector::{SortElem, SortVector, sort_bitonic_lanes};

/// Keys per vector-merge step from each input: 4 vectors (the 16 + 16 network).
const STEP: usize = 16;

/// Four vectors: 16 sorted keys.
type Quad<S> = [<S as SortVector>::V; 4];

#[inline(always)]
fn load16<S: SortVector>(s: S, src: &[S::Elem]) -> Quad<S> {
    let (quads, _) = src[..STEP].as_chunks::<4>();
    [
        s.load(&quads[0]),
        s.load(&quads[1]),
        s.load(&quads[2]),
        s.load(&quads[3]),
    ]
}

#[inline(always)]
fn store16<S: SortVector>(s: S, v: Quad<S>, dst: &mut [S::Elem]) {
    let (quads, _) = dst[..STEP].as_chunks_mut::<4>();
    for (q, v) in quads.iter_mut().zip(v) {
        s.store(v, q);
    }
}

/// [`load16`] of up to 16 keys, padded with [`SortElem::MAX`].
#[inline(always)]
fn load16_padded<S: SortVector>(s: S, src: &[S::Elem]) -> Quad<S> {
    if src.len() >= STEP {
        return load16(s, src);
    }
    let mut block = [S::Elem::MAX; STEP];
    block[..src.len()].copy_from_slice(src);
    load16(s, &block)
}

/// Stores the first `dst.len()` (at most 16) keys of `v`.
#[inline(always)]
fn store_prefix<S: SortVector>(s: S, v: Quad<S>, dst: &mut [S::Elem]) {
    if dst.len() >= STEP {
        return store16(s, v, dst);
    }
    let mut block = [S::Elem::MAX; STEP];
    store16(s, v, &mut block);
    dst.copy_from_slice(&block[..dst.len()]);
}

/// Sorts the keys of `v` (`N` vectors, `N` a power of two >= 2) given that they form a
/// bitonic sequence: half-cleaners at vector distances N/2, ..., 1, then lane distances
/// 2 and 1 inside each vector.
#[inline(always)]
fn sort_bitonic<S: SortVector, const N: usize>(s: S, v: &mut [S::V; N]) {
    let mut d = N / 2;
    while d >= 1 {
        for i in 0..N {
            if i & d == 0 {
                (v[i], v[i + d]) = s.minmax(v[i], v[i + d]);
            }
        }
        d /= 2;
    }
    for i in (0..N).step_by(2) {
        (v[i], v[i + 1]) = sort_bitonic_lanes(s, v[i], v[i + 1]);
    }
}

/// Merges two sorted runs of `N` vectors: returns (the `4N` smallest, the `4N`
/// largest), both sorted.
#[inline(always)]
pub(crate) fn merge_bitonic<S: SortVector, const N: usize>(
    s: S,
    a: [S::V; N],
    b: [S::V; N],
) -> ([S::V; N], [S::V; N]) {
    // a ++ reverse(b) is bitonic; one half-cleaner splits it into two bitonic halves
    // with every key of the low half <= every key of the high half.
    // Plain loops, not `array::from_fn`: its closure is not always inlined, and outside
    // the caller's `target_feature` every min and max becomes a call (measured).
    let (mut lo, mut hi) = (a, b);
    for i in 0..N {
        (lo[i], hi[i]) = s.minmax(a[i], s.reverse(b[N - 1 - i]));
    }
    sort_bitonic(s, &mut lo);
    sort_bitonic(s, &mut hi);
    (lo, hi)
}

/// Merges sorted `a` and sorted `b` into `out` (`out.len() == a.len() + b.len()`).
#[inline(always)]
pub(crate) fn merge<S: SortVector>(s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) {
    debug_assert_eq!(out.len(), a.len() + b.len());
    if a.is_empty() || b.is_empty() {
        out.copy_from_slice(if a.is_empty() { b } else { a });
        return;
    }
    let n = out.len();
    // The vector front takes STEP / (STEP + HYBRID_BACK) of the output in whole steps
    // (all of it without the hybrid); the scalar back takes the rest.
    let front = if S::HYBRID_BACK == 0 {
        n
    } else {
        (n * STEP / (STEP + S::HYBRID_BACK)) / STEP * STEP
    };
    let (out_front, out_back) = out.split_at_mut(front);

    let mut front_state = Front::start(s, a, b, out_front);
    let mut back = Back {
        ja: a.len(),
        jb: b.len(),
        k: out_back.len(),
    };
    // Interleave one vector step (16 keys) with S::HYBRID_BACK scalar steps. The hot
    // loop runs while both inputs hold a whole block, so the choice of the next block is
    // a conditional move, not a branch; the loop below handles the last blocks.
    while front_state.o + STEP <= front
        && front_state.ia + STEP <= a.len()
        && front_state.ib + STEP <= b.len()
    {
        front_state.step_both_full(s, a, b, out_front);
        back.steps(a, b, out_back, S::HYBRID_BACK);
    }
    while front_state.o < front && front_state.step(s, a, b, out_front) {
        back.steps(a, b, out_back, S::HYBRID_BACK);
    }
    front_state.finish(s, out_front);
    back.steps(a, b, out_back, usize::MAX);
    back.finish(a, b, out_back);
}

/// The vector merge from the front.
///
/// It merges `a` and `b` as if each were padded with [`SortElem::MAX`] to a whole
/// number of 16-key blocks, and writes only as many keys as `out` holds: every padding
/// key is at least every real key, so the first `out.len()` merged keys are the real
/// ones (a padding key equal to a real one is the same element).
struct Front<S: SortVector> {
    /// The 16 largest keys loaded so far that are not yet written.
    carry: Quad<S>,
    ia: usize,
    ib: usize,
    /// Keys written to the front output so far.
    o: usize,
}

impl<S: SortVector> Front<S> {
    /// Merges the first 16 keys of each input (padded) and writes the lowest 16 (or
    /// fewer, if `out` is shorter). Needs non-empty `a` and `b`.
    #[inline(always)]
    fn start(s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) -> Self {
        let (ia, ib) = (STEP.min(a.len()), STEP.min(b.len()));
        let (lo, carry) = merge_bitonic(s, load16_padded(s, a), load16_padded(s, b));
        let o = STEP.min(out.len());
        store_prefix(s, lo, &mut out[..o]);
        Self { carry, ia, ib, o }
    }

    /// One step when both inputs hold at least 16 more keys and the output has room.
    #[inline(always)]
    fn step_both_full(&mut self, s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) {
        // Choose the next block without a branch: its direction is data-dependent and
        // would mispredict about half the time on random keys. (A safe selection between
        // the two slices measured 2.2x slower for pairs; this pointer selection is a cmov.)
        assert!(self.ia + STEP <= a.len() && self.ib + STEP <= b.len());
        let take_a = usize::from(a[self.ia] <= b[self.ib]);
        let base = [b.as_ptr(), a.as_ptr()][take_a];
        let at = [self.ib, self.ia][take_a];
        // SAFETY: the assert above puts 16 keys from `ia` in `a` and from `ib` in `b`
        // in bounds, and (base, at) is one of those two pairs; an array has its element's
        // alignment.
        let block: &[S::Elem; STEP] = unsafe { &*base.add(at).cast::<[S::Elem; STEP]>() };
        let next = load16(s, block);
        self.ia += take_a * STEP;
        self.ib += (1 - take_a) * STEP;
        let (lo, hi) = merge_bitonic(s, self.carry, next);
        store16(s, lo, &mut out[self.o..self.o + STEP]);
        self.o += STEP;
        self.carry = hi;
    }

    /// One step with any number of keys left (a short block is padded): loads the next
    /// block of the input with the smaller head, writes up to 16 keys. False, doing
    /// nothing, when both inputs are used up.
    #[inline(always)]
    fn step(&mut self, s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) -> bool {
        let take_a = match (a.get(self.ia), b.get(self.ib)) {
            (Some(x), Some(y)) => x <= y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        let next = if take_a {
            let block = &a[self.ia..];
            self.ia += STEP.min(block.len());
            load16_padded(s, block)
        } else {
            let block = &b[self.ib..];
            self.ib += STEP.min(block.len());
            load16_padded(s, block)
        };
        let (lo, hi) = merge_bitonic(s, self.carry, next);
        let end = (self.o + STEP).min(out.len());
        store_prefix(s, lo, &mut out[self.o..end]);
        self.o = end;
        self.carry = hi;
        true
    }

    /// Both inputs are used up: the rest of the output is the smallest of the carry.
    #[inline(always)]
    fn finish(&self, s: S, out: &mut [S::Elem]) {
        if self.o < out.len() {
            store_prefix(s, self.carry, &mut out[self.o..]);
        }
    }
}

/// The branchless scalar merge from the back: writes the largest keys downwards.
struct Back {
    ja: usize,
    jb: usize,
    /// Keys of the back output still to write (it is filled from index k-1 down).
    k: usize,
}

impl Back {
    /// Up to `max` steps while both inputs still have keys.
    #[inline(always)]
    fn steps<T: Copy + Ord>(&mut self, a: &[T], b: &[T], out: &mut [T], max: usize) {
        // Invariants: ja <= a.len(), jb <= b.len(), k <= out.len() (they start at the
        // lengths and only decrease), and left <= k.
        assert!(self.ja <= a.len() && self.jb <= b.len() && self.k <= out.len());
        let mut left = max.min(self.k);
        while left > 0 && self.ja > 0 && self.jb > 0 {
            // SAFETY: by the invariants and the loop condition, ja - 1 < a.len(),
            // jb - 1 < b.len() and k - 1 < out.len() (k >= left > 0).
            let (x, y) = unsafe { (*a.get_unchecked(self.ja - 1), *b.get_unchecked(self.jb - 1)) };
            let take_a = usize::from(x > y);
            // SAFETY: as above.
            unsafe { *out.get_unchecked_mut(self.k - 1) = x.max(y) };
            self.ja -= take_a;
            self.jb -= 1 - take_a;
            self.k -= 1;
            left -= 1;
        }
    }

    /// One input ran out: the rest of the back output is the top of the other.
    #[inline(always)]
    fn finish<T: Copy>(&self, a: &[T], b: &[T], out: &mut [T]) {
        let k = self.k;
        if k == 0 {
            return;
        }
        let src = if self.ja > 0 {
            &a[self.ja - k..self.ja]
        } else {
            &b[self.jb - k..self.jb]
        };
        out[..k].copy_from_slice(src);
    }
}
