//! The merge phase: two sorted runs into one, with the NEON-MS hybrid of a vectorised
//! bitonic merge (front, 16 + 16 keys per step) interleaved with a branchless scalar
//! merge (back, one key per step), so the SIMD and the integer pipelines work at once.
//!
//! The front produces exactly the `front` smallest keys and the back exactly the
//! `n - front` largest, so the two never write the same slot. Keys carry no payload, so
//! equal keys are interchangeable and the split is exact even with duplicates.

use super::vector::{SortVector, sort_bitonic_lanes};

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
    let halves: [(S::V, S::V); N] =
        core::array::from_fn(|i| s.minmax(a[i], s.reverse(b[N - 1 - i])));
    let mut lo: [S::V; N] = core::array::from_fn(|i| halves[i].0);
    let mut hi: [S::V; N] = core::array::from_fn(|i| halves[i].1);
    sort_bitonic(s, &mut lo);
    sort_bitonic(s, &mut hi);
    (lo, hi)
}

/// Merges sorted `a` and sorted `b` into `out` (`out.len() == a.len() + b.len()`).
#[inline(always)]
pub(crate) fn merge<S: SortVector>(s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) {
    debug_assert_eq!(out.len(), a.len() + b.len());
    if a.len() < STEP || b.len() < STEP {
        merge_smallest(a, b, &[], out);
        return;
    }
    let n = out.len();
    // The vector front takes STEP / (STEP + HYBRID_BACK) of the output in whole steps (at least
    // one: n >= 32); the scalar back takes the rest.
    let front = (n * STEP / (STEP + S::HYBRID_BACK)).max(STEP) / STEP * STEP;
    let (out_front, out_back) = out.split_at_mut(front);

    let mut front_state = Front::start(s, a, b, out_front);
    let mut back = Back {
        ja: a.len(),
        jb: b.len(),
        k: out_back.len(),
    };
    // Interleave one vector step (16 keys) with S::HYBRID_BACK scalar steps. The hot
    // loop runs while both inputs hold a whole block, so the choice of the next block is
    // a conditional move, not a branch; the careful loop below handles the last blocks.
    while front_state.o + STEP <= front
        && front_state.ia + STEP <= a.len()
        && front_state.ib + STEP <= b.len()
    {
        front_state.step_both_full(s, a, b, out_front);
        back.steps(a, b, out_back, S::HYBRID_BACK);
    }
    while front_state.can_step(a, b, front) {
        front_state.step(s, a, b, out_front);
        back.steps(a, b, out_back, S::HYBRID_BACK);
    }
    front_state.finish(s, a, b, out_front);
    back.steps(a, b, out_back, usize::MAX);
    back.finish(a, b, out_back);
}

/// The vector merge from the front.
struct Front<S: SortVector> {
    /// The 16 largest keys loaded so far that are not yet written.
    carry: Quad<S>,
    ia: usize,
    ib: usize,
    /// Keys written to the front output so far.
    o: usize,
}

impl<S: SortVector> Front<S> {
    /// Merges the first 16 keys of each input and writes the lowest 16.
    /// Needs `a.len() >= 16`, `b.len() >= 16`, `out.len() >= 16`.
    #[inline(always)]
    fn start(s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) -> Self {
        let (lo, carry) = merge_bitonic(s, load16(s, a), load16(s, b));
        store16(s, lo, out);
        Self {
            carry,
            ia: STEP,
            ib: STEP,
            o: STEP,
        }
    }

    /// Whether another whole vector step fits: room for 16 more outputs, and the input
    /// the merge must read next (the one with the smaller head, or the only one left)
    /// has 16 keys.
    #[inline(always)]
    fn can_step(&self, a: &[S::Elem], b: &[S::Elem], out_len: usize) -> bool {
        if self.o + STEP > out_len {
            return false;
        }
        match (a.get(self.ia), b.get(self.ib)) {
            (Some(x), Some(y)) if x <= y => self.ia + STEP <= a.len(),
            (Some(_), Some(_)) | (None, Some(_)) => self.ib + STEP <= b.len(),
            (Some(_), None) => self.ia + STEP <= a.len(),
            (None, None) => false,
        }
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
        self.absorb(s, next, out);
    }

    /// One step; only after [`Front::can_step`] returned true.
    #[inline(always)]
    fn step(&mut self, s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) {
        let take_a = match (a.get(self.ia), b.get(self.ib)) {
            (Some(x), Some(y)) => x <= y,
            (Some(_), None) => true,
            _ => false,
        };
        let next = if take_a {
            self.ia += STEP;
            load16(s, &a[self.ia - STEP..])
        } else {
            self.ib += STEP;
            load16(s, &b[self.ib - STEP..])
        };
        self.absorb(s, next, out);
    }

    /// Merges a freshly loaded block with the carry: writes the 16 smallest, keeps the
    /// 16 largest.
    #[inline(always)]
    fn absorb(&mut self, s: S, next: Quad<S>, out: &mut [S::Elem]) {
        let (lo, hi) = merge_bitonic(s, self.carry, next);
        store16(s, lo, &mut out[self.o..self.o + STEP]);
        self.o += STEP;
        self.carry = hi;
    }

    /// Writes the remaining front outputs with a scalar 3-way merge of the carry and the
    /// rest of both inputs.
    #[inline(always)]
    fn finish(&self, s: S, a: &[S::Elem], b: &[S::Elem], out: &mut [S::Elem]) {
        let mut carry = [S::Elem::default(); STEP];
        store16(s, self.carry, &mut carry);
        merge_smallest(&a[self.ia..], &b[self.ib..], &carry, &mut out[self.o..]);
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

/// Fills `out` with the `out.len()` smallest keys of `a`, `b` and `c` (each sorted),
/// in order. Stops early (never panics) if the three hold fewer keys than that.
fn merge_smallest<T: Copy + Ord>(a: &[T], b: &[T], c: &[T], out: &mut [T]) {
    let (mut i, mut j, mut k) = (0, 0, 0);
    for slot in out.iter_mut() {
        let mut best: Option<(T, u8)> = a.get(i).map(|&x| (x, 0));
        if let Some(&y) = b.get(j)
            && best.is_none_or(|(v, _)| y < v)
        {
            best = Some((y, 1));
        }
        if let Some(&z) = c.get(k)
            && best.is_none_or(|(v, _)| z < v)
        {
            best = Some((z, 2));
        }
        let Some((value, source)) = best else {
            debug_assert!(false, "merge_smallest ran out of keys");
            return;
        };
        *slot = value;
        match source {
            0 => i += 1,
            1 => j += 1,
            _ => k += 1,
        }
    }
}
