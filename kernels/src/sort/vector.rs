//! The vector operations the sort is written in.
//!
//! Two layers:
//! - [`Lanes`]: 4 x i32 lane operations, implemented once per ISA
//!   (`arch/aarch64/sort.rs`, `arch/x86_64/sort.rs`). An implementor is a zero-sized
//!   token whose existence proves the instructions are available, so every method is safe.
//! - [`SortVector`]: what the algorithm sorts, a vector of 4 elements, built on any
//!   [`Lanes`]: [`Keys`] (4 i32 keys in one register), [`UnsignedKeys`] (4 u32 keys)
//!   and [`Pairs`] (4 (key, index) pairs in two registers, ordered by key then index).

/// A (key, index) element of a pair sort, ordered by key, then index. `repr(C)` so 4 of
/// them load as 8 interleaved 32-bit lanes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C)]
pub(crate) struct Pair {
    /// The order-preserving i32 image of the key.
    pub key: i32,
    /// The payload that travels with it.
    pub idx: u32,
}

/// What the sort needs of an element beyond its order.
pub(crate) trait SortElem: Copy + Ord + Default {
    /// Whether equal radix keys mean equal elements (no payload to order by).
    const WHOLE: bool;
    /// The largest element (the merge pads short blocks with it).
    const MAX: Self;
    /// The order-preserving u32 image of the element's key (the radix partition's key):
    /// `a.radix_key() < b.radix_key()` implies `a < b`.
    fn radix_key(self) -> u32;
}

impl SortElem for i32 {
    const WHOLE: bool = true;
    const MAX: Self = i32::MAX;
    #[inline(always)]
    fn radix_key(self) -> u32 {
        (self as u32) ^ 0x8000_0000
    }
}

impl SortElem for u32 {
    const WHOLE: bool = true;
    const MAX: Self = u32::MAX;
    #[inline(always)]
    fn radix_key(self) -> u32 {
        self
    }
}

impl SortElem for Pair {
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

/// Operations on 4 lanes of i32, per ISA.
pub(crate) trait Lanes: Copy {
    /// Which backend this is.
    const BACKEND: crate::Backend;
    /// Scalar back-merge steps interleaved with each 16-key vector merge step (the
    /// NEON-MS hybrid); 0 merges with vectors only. Chosen per backend, see BENCHMARKS.md.
    const HYBRID_BACK: usize;
    /// A 128-bit vector of 4 i32 lanes.
    type V: Copy;
    /// Loads 4 lanes.
    fn load(self, src: &[i32; 4]) -> Self::V;
    /// Stores 4 lanes.
    fn store(self, v: Self::V, dst: &mut [i32; 4]);
    /// Loads 4 pairs deinterleaved: (keys, indices).
    fn load_pairs(self, src: &[Pair; 4]) -> (Self::V, Self::V);
    /// Stores keys and indices interleaved as 4 pairs.
    fn store_pairs(self, keys: Self::V, idx: Self::V, dst: &mut [Pair; 4]);
    /// Lane-wise signed minimum.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise signed maximum.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise unsigned minimum.
    fn min_unsigned(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise unsigned maximum.
    fn max_unsigned(self, a: Self::V, b: Self::V) -> Self::V;
    /// All-ones lanes where `a > b` (signed), zero elsewhere.
    fn gt(self, a: Self::V, b: Self::V) -> Self::V;
    /// All-ones lanes where `a > b` (unsigned), zero elsewhere.
    fn gt_unsigned(self, a: Self::V, b: Self::V) -> Self::V;
    /// All-ones lanes where `a == b`, zero elsewhere.
    fn eq(self, a: Self::V, b: Self::V) -> Self::V;
    /// Bitwise and.
    fn and(self, a: Self::V, b: Self::V) -> Self::V;
    /// Bitwise or.
    fn or(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `mask ? a : b` for an all-ones/all-zeros `mask`.
    fn select(self, mask: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// Lanes in reverse order: `[v3, v2, v1, v0]`.
    fn reverse(self, v: Self::V) -> Self::V;
    /// Transposes a 4 x 4 block: lane `j` of output `i` is lane `i` of input `j`.
    fn transpose(self, r: [Self::V; 4]) -> [Self::V; 4];
    /// `([x0, x1, y0, y1], [x2, x3, y2, y3])`: lane distance 2 of a bitonic step.
    fn split_halves(self, x: Self::V, y: Self::V) -> (Self::V, Self::V);
    /// Given `lo = [x0, x1, y0, y1]`, `hi = [x2, x3, y2, y3]` (lane distance 2 done),
    /// returns `(p, q)` such that each lane j pairs `(p_j, q_j)` as one of
    /// `(x0, x1)`, `(x2, x3)`, `(y0, y1)`, `(y2, y3)`, in an ISA-specific lane order.
    fn split_neighbours(self, lo: Self::V, hi: Self::V) -> (Self::V, Self::V);
    /// Inverse of [`Lanes::split_neighbours`] for `mn = min(p, q)`, `mx = max(p, q)`:
    /// returns `(x, y)` with each lane pair in min, max order.
    fn join_neighbours(self, mn: Self::V, mx: Self::V) -> (Self::V, Self::V);
}

/// A vector of 4 sort elements: what the in-register networks and merges operate on.
pub(crate) trait SortVector: Copy {
    /// The element type (its `Ord` is the sort order, used by the scalar paths).
    type Elem: SortElem;
    /// The register(s) holding 4 elements.
    type V: Copy;
    /// Which backend this is (recorded by test builds only).
    #[cfg_attr(not(test), allow(dead_code))]
    const BACKEND: crate::Backend;
    /// See [`Lanes::HYBRID_BACK`].
    const HYBRID_BACK: usize;
    /// Loads 4 elements.
    fn load(self, src: &[Self::Elem; 4]) -> Self::V;
    /// Stores 4 elements.
    fn store(self, v: Self::V, dst: &mut [Self::Elem; 4]);
    /// Lane-wise (smaller, larger).
    fn minmax(self, a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// See [`Lanes::reverse`].
    fn reverse(self, v: Self::V) -> Self::V;
    /// See [`Lanes::transpose`].
    fn transpose(self, r: [Self::V; 4]) -> [Self::V; 4];
    /// See [`Lanes::split_halves`].
    fn split_halves(self, x: Self::V, y: Self::V) -> (Self::V, Self::V);
    /// See [`Lanes::split_neighbours`].
    fn split_neighbours(self, lo: Self::V, hi: Self::V) -> (Self::V, Self::V);
    /// See [`Lanes::join_neighbours`].
    fn join_neighbours(self, mn: Self::V, mx: Self::V) -> (Self::V, Self::V);
}

/// Sorts each of `x` and `y` within itself, given that each holds a bitonic sequence of 4
/// (the last two levels of a bitonic merge: lane distance 2, then 1).
#[inline(always)]
pub(crate) fn sort_bitonic_lanes<S: SortVector>(s: S, x: S::V, y: S::V) -> (S::V, S::V) {
    let (p, q) = s.split_halves(x, y);
    let (lo, hi) = s.minmax(p, q);
    let (p, q) = s.split_neighbours(lo, hi);
    let (mn, mx) = s.minmax(p, q);
    s.join_neighbours(mn, mx)
}

/// The shuffles of a [`SortVector`] that is one register of [`Lanes`] (`self.0`): the
/// lane operations themselves. For the key types, which differ only in how they load,
/// store and compare.
macro_rules! single_register_shuffles {
    () => {
        #[inline(always)]
        fn reverse(self, v: L::V) -> L::V {
            self.0.reverse(v)
        }
        #[inline(always)]
        fn transpose(self, r: [L::V; 4]) -> [L::V; 4] {
            self.0.transpose(r)
        }
        #[inline(always)]
        fn split_halves(self, x: L::V, y: L::V) -> (L::V, L::V) {
            self.0.split_halves(x, y)
        }
        #[inline(always)]
        fn split_neighbours(self, lo: L::V, hi: L::V) -> (L::V, L::V) {
            self.0.split_neighbours(lo, hi)
        }
        #[inline(always)]
        fn join_neighbours(self, mn: L::V, mx: L::V) -> (L::V, L::V) {
            self.0.join_neighbours(mn, mx)
        }
    };
}

/// 4 i32 keys in one register.
#[derive(Clone, Copy)]
pub(crate) struct Keys<L>(pub L);

impl<L: Lanes> SortVector for Keys<L> {
    type Elem = i32;
    type V = L::V;
    const BACKEND: crate::Backend = L::BACKEND;
    const HYBRID_BACK: usize = L::HYBRID_BACK;

    #[inline(always)]
    fn load(self, src: &[i32; 4]) -> L::V {
        self.0.load(src)
    }
    #[inline(always)]
    fn store(self, v: L::V, dst: &mut [i32; 4]) {
        self.0.store(v, dst)
    }
    #[inline(always)]
    fn minmax(self, a: L::V, b: L::V) -> (L::V, L::V) {
        (self.0.min(a, b), self.0.max(a, b))
    }
    single_register_shuffles!();
}

/// 4 u32 keys in one register, compared unsigned (so u32 sorts without mapping its keys
/// onto i32 before and after: two passes over the input saved).
#[derive(Clone, Copy)]
pub(crate) struct UnsignedKeys<L>(pub L);

impl<L: Lanes> SortVector for UnsignedKeys<L> {
    type Elem = u32;
    type V = L::V;
    const BACKEND: crate::Backend = L::BACKEND;
    const HYBRID_BACK: usize = L::HYBRID_BACK;

    #[inline(always)]
    fn load(self, src: &[u32; 4]) -> L::V {
        self.0.load(crate::cast::u32x4_as_i32x4(src))
    }
    #[inline(always)]
    fn store(self, v: L::V, dst: &mut [u32; 4]) {
        self.0.store(v, crate::cast::u32x4_as_i32x4_mut(dst))
    }
    #[inline(always)]
    fn minmax(self, a: L::V, b: L::V) -> (L::V, L::V) {
        (self.0.min_unsigned(a, b), self.0.max_unsigned(a, b))
    }
    single_register_shuffles!();
}

/// Keys and indices of 4 pairs.
type PairV<L> = (<L as Lanes>::V, <L as Lanes>::V);

/// 4 (key, index) pairs in two registers (keys, indices), ordered by key then index, so
/// no two distinct pairs compare equal and the merge's exact front/back split holds.
#[derive(Clone, Copy)]
pub(crate) struct Pairs<L>(pub L);

impl<L: Lanes> Pairs<L> {
    /// Applies a two-input, two-output shuffle to keys and indices alike.
    #[inline(always)]
    fn both(
        self,
        a: PairV<L>,
        b: PairV<L>,
        f: impl Fn(L, L::V, L::V) -> (L::V, L::V),
    ) -> (PairV<L>, PairV<L>) {
        let (k0, k1) = f(self.0, a.0, b.0);
        let (i0, i1) = f(self.0, a.1, b.1);
        ((k0, i0), (k1, i1))
    }
}

impl<L: Lanes> SortVector for Pairs<L> {
    type Elem = Pair;
    type V = PairV<L>;
    const BACKEND: crate::Backend = L::BACKEND;
    const HYBRID_BACK: usize = L::HYBRID_BACK;

    #[inline(always)]
    fn load(self, src: &[Pair; 4]) -> Self::V {
        self.0.load_pairs(src)
    }
    #[inline(always)]
    fn store(self, v: Self::V, dst: &mut [Pair; 4]) {
        self.0.store_pairs(v.0, v.1, dst)
    }
    #[inline(always)]
    fn minmax(self, a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let l = self.0;
        // a > b  <=>  a.key > b.key, or keys equal and a.idx > b.idx (unsigned).
        let a_gt_b = l.or(
            l.gt(a.0, b.0),
            l.and(l.eq(a.0, b.0), l.gt_unsigned(a.1, b.1)),
        );
        let lo = (l.select(a_gt_b, b.0, a.0), l.select(a_gt_b, b.1, a.1));
        let hi = (l.select(a_gt_b, a.0, b.0), l.select(a_gt_b, a.1, b.1));
        (lo, hi)
    }
    #[inline(always)]
    fn reverse(self, v: Self::V) -> Self::V {
        (self.0.reverse(v.0), self.0.reverse(v.1))
    }
    #[inline(always)]
    fn transpose(self, r: [Self::V; 4]) -> [Self::V; 4] {
        let k = self.0.transpose([r[0].0, r[1].0, r[2].0, r[3].0]);
        let i = self.0.transpose([r[0].1, r[1].1, r[2].1, r[3].1]);
        [(k[0], i[0]), (k[1], i[1]), (k[2], i[2]), (k[3], i[3])]
    }
    #[inline(always)]
    fn split_halves(self, x: Self::V, y: Self::V) -> (Self::V, Self::V) {
        self.both(x, y, L::split_halves)
    }
    #[inline(always)]
    fn split_neighbours(self, lo: Self::V, hi: Self::V) -> (Self::V, Self::V) {
        self.both(lo, hi, L::split_neighbours)
    }
    #[inline(always)]
    fn join_neighbours(self, mn: Self::V, mx: Self::V) -> (Self::V, Self::V) {
        self.both(mn, mx, L::join_neighbours)
    }
}
