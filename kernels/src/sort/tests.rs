//! Every sort backend against the standard library, on random and adversarial inputs.

use super::*;
use crate::testutil::xorshift;
use proptest::prelude::*;

type SortFn = fn(&mut [i32]);

/// Any backend with the NEON-MS scalar back merge switched on (3 steps per vector step),
/// so the hybrid path is tested on every machine, not only where it is the default.
#[derive(Clone, Copy)]
struct Hybrid<S>(S);

impl<S: vector::SortVector> vector::SortVector for Hybrid<S> {
    type Elem = S::Elem;
    type V = S::V;
    const BACKEND: Backend = S::BACKEND;
    const HYBRID_BACK: usize = 3;
    fn load(self, src: &[S::Elem; 4]) -> S::V {
        self.0.load(src)
    }
    fn store(self, v: S::V, dst: &mut [S::Elem; 4]) {
        self.0.store(v, dst)
    }
    fn minmax(self, a: S::V, b: S::V) -> (S::V, S::V) {
        self.0.minmax(a, b)
    }
    fn reverse(self, v: S::V) -> S::V {
        self.0.reverse(v)
    }
    fn transpose(self, r: [S::V; 4]) -> [S::V; 4] {
        self.0.transpose(r)
    }
    fn split_halves(self, x: S::V, y: S::V) -> (S::V, S::V) {
        self.0.split_halves(x, y)
    }
    fn split_neighbours(self, lo: S::V, hi: S::V) -> (S::V, S::V) {
        self.0.split_neighbours(lo, hi)
    }
    fn join_neighbours(self, mn: S::V, mx: S::V) -> (S::V, S::V) {
        self.0.join_neighbours(mn, mx)
    }
}

/// (backend, i32 sort) for each backend this CPU can run, vector backends called
/// directly so a dispatch bug cannot hide one.
fn backends() -> Vec<(Backend, SortFn)> {
    let mut all: Vec<(Backend, SortFn)> = vec![(Backend::Scalar, scalar_sort_i32)];
    #[cfg(tandem_neon)]
    {
        use crate::arch::aarch64::sort::Neon;
        all.push((Backend::Neon, crate::arch::aarch64::sort::sort_i32));
        all.push((Backend::Neon, |d| {
            driver_sort(Hybrid(vector::Keys(Neon)), d)
        }));
    }
    #[cfg(tandem_sse2)]
    if crate::arch::x86_64::sort::Sse41::new().is_some() {
        use crate::arch::x86_64::sort::Sse41;
        all.push((Backend::Sse41, |d| {
            Sse41::new().expect("detected").sort_i32(d)
        }));
        all.push((Backend::Sse41, |d| {
            driver_sort(Hybrid(vector::Keys(Sse41::new().expect("detected"))), d)
        }));
    }
    all
}

fn check_i32(input: &[i32]) {
    let mut want = input.to_vec();
    want.sort_unstable();
    for (backend, sort) in backends() {
        let mut got = input.to_vec();
        sort(&mut got);
        assert!(got == want, "{backend:?} mis-sorted {} keys", input.len());
    }
}

fn check_f32(input: &[f32]) {
    let mut want = input.to_vec();
    want.sort_unstable_by(f32::total_cmp);
    let mut got = input.to_vec();
    sort_f32(&mut got);
    let same = got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same && got.len() == want.len(),
        "sort_f32 mis-sorted {} keys",
        input.len()
    );
}

fn check_u32(input: &[u32]) {
    let mut want = input.to_vec();
    want.sort_unstable();
    let mut got = input.to_vec();
    sort_u32(&mut got);
    assert!(got == want, "sort_u32 mis-sorted {} keys", input.len());
}

/// `sort_pairs_f32` against the standard library sorting the zipped pairs by key, then
/// index, bit for bit.
fn check_pairs(keys: &[f32], idx: &[u32]) {
    let mut want: Vec<(f32, u32)> = keys.iter().copied().zip(idx.iter().copied()).collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut k, mut i) = (keys.to_vec(), idx.to_vec());
    sort_pairs_f32(&mut k, &mut i).unwrap();
    let same = k
        .iter()
        .zip(&i)
        .zip(&want)
        .all(|((k, i), w)| k.to_bits() == w.0.to_bits() && *i == w.1);
    assert!(same, "{} pairs mis-sorted", keys.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn i32_random_lengths_and_offsets(
        data in proptest::collection::vec(any::<i32>(), 0..5000),
        offset in 0usize..4,
    ) {
        let offset = offset.min(data.len());
        check_i32(&data[offset..]);
    }

    #[test]
    fn i32_few_distinct_values(data in proptest::collection::vec(-3i32..3, 0..3000)) {
        check_i32(&data);
    }

    #[test]
    fn u32_random(data in proptest::collection::vec(any::<u32>(), 0..3000)) {
        check_u32(&data);
    }

    #[test]
    fn f32_random_bit_patterns(bits in proptest::collection::vec(any::<u32>(), 0..3000)) {
        // Every bit pattern: NaNs of both signs with payloads, subnormals, infinities.
        let data: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
        check_f32(&data);
    }
}

#[test]
fn every_length_around_block_and_run_boundaries() {
    let mut next = xorshift(7);
    for len in (0..300).chain([511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097]) {
        let data: Vec<i32> = (0..len).map(|_| next() as i32).collect();
        check_i32(&data);
    }
}

#[test]
fn adversarial_patterns() {
    for len in [65usize, 100, 1000, 4099] {
        let n = len as i32;
        check_i32(&(0..n).collect::<Vec<_>>()); // sorted
        check_i32(&(0..n).rev().collect::<Vec<_>>()); // reversed
        check_i32(&vec![42; len]); // all equal
        check_i32(&(0..n).map(|i| i % 2).collect::<Vec<_>>()); // two values
        check_i32(
            &(0..n)
                .map(|i| if i < n / 2 { i } else { n - i })
                .collect::<Vec<_>>(),
        ); // organ pipe
        check_i32(
            &(0..n)
                .map(|i| [i32::MIN, i32::MAX, 0][i as usize % 3])
                .collect::<Vec<_>>(),
        );
        check_i32(&(0..n).map(|i| (i * 7919) % 101).collect::<Vec<_>>()); // sawtooth
    }
}

/// Inputs long enough for the radix partition (and partitions of partitions), shaped to
/// hit its special cases: narrow ranges, one heavy bucket, buckets of one repeated key
/// (copied, not sorted), keys that differ only in their top or bottom bits, and inputs
/// that run into the depth limit.
#[test]
fn radix_partition_on_skewed_keys() {
    let mut next = xorshift(4242);
    for len in [4097usize, 9000, 70_000, 300_001] {
        let mut random = || next() as i32;
        let shapes: Vec<(&str, Vec<i32>)> = vec![
            ("uniform", (0..len).map(|_| random()).collect()),
            (
                "narrow",
                (0..len).map(|_| 1_000_000 + (random() & 1023)).collect(),
            ),
            ("all equal", vec![-7; len]),
            (
                "half one value",
                (0..len)
                    .map(|i| if i % 2 == 0 { 7 } else { random() })
                    .collect(),
            ),
            (
                "top bit only",
                (0..len).map(|_| random() & i32::MIN).collect(),
            ),
            ("low bits only", (0..len).map(|_| random() & 15).collect()),
            (
                "one outlier",
                (0..len)
                    .map(|i| if i == len / 3 { i32::MIN } else { 5 })
                    .collect(),
            ),
            (
                "heavy bucket",
                (0..len)
                    .map(|i| {
                        if i % 10 == 0 {
                            random()
                        } else {
                            random() & 1023
                        }
                    })
                    .collect(),
            ),
            (
                "powers of two",
                (0..len).map(|_| 1i32 << (random() as u32 % 31)).collect(),
            ),
            (
                "extremes",
                (0..len)
                    .map(|_| {
                        if random() < 0 {
                            i32::MIN + (random() & 7)
                        } else {
                            i32::MAX - (random() & 7)
                        }
                    })
                    .collect(),
            ),
            ("sorted", (0..len as i32).collect()),
            ("reversed", (0..len as i32).rev().collect()),
        ];
        for (shape, keys) in shapes {
            let mut want = keys.clone();
            want.sort_unstable();
            for (backend, sort) in backends() {
                let mut got = keys.clone();
                sort(&mut got);
                assert!(got == want, "{backend:?} mis-sorted {len} {shape} keys");
            }
        }
        // f32 whose exponents bunch (the leading bits of their keys vary little).
        let floats: Vec<f32> = (0..len).map(|_| (next() as i32) as f32 * 1e-6).collect();
        check_f32(&floats);
        let u: Vec<u32> = (0..len).map(|_| (next() as u32) >> (next() % 32)).collect();
        check_u32(&u);
    }
}

/// The merge sort alone over several cache-sized chunks (the last one longer), leaving
/// its result in either buffer: since the partition, only large buckets of equal radix
/// keys reach it.
#[test]
fn merge_sort_over_several_chunks_into_either_buffer() {
    use super::driver::{CHUNK, Dest, merge_sort};
    fn run<S: vector::SortVector<Elem = i32>>(s: S) {
        let mut next = xorshift(77);
        for n in [2 * CHUNK, 3 * CHUNK + 17, 5 * CHUNK - 1] {
            for dest in [Dest::Keys, Dest::Other] {
                let keys: Vec<i32> = (0..n).map(|_| next() as i32).collect();
                let mut want = keys.clone();
                want.sort_unstable();
                let (mut k, mut o) = (keys, vec![0; n]);
                merge_sort(s, &mut k, &mut o, dest);
                let got = if dest == Dest::Keys { &k } else { &o };
                assert!(*got == want, "{n} keys into {dest:?}");
            }
        }
    }
    #[cfg(tandem_neon)]
    run(vector::Keys(crate::arch::aarch64::sort::Neon));
    #[cfg(tandem_sse2)]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        run(vector::Keys(sse41));
        run(Hybrid(vector::Keys(sse41)));
    }
}

/// Past 2^21 keys (an input beyond the caches: narrower digits for buckets in memory).
#[test]
fn inputs_beyond_the_caches() {
    let mut next = xorshift(2021);
    let len = (1 << 21) + 4097;
    let uniform: Vec<u32> = (0..len).map(|_| next() as u32).collect();
    check_u32(&uniform);
    let floats: Vec<f32> = (0..len).map(|_| (next() as i32) as f32 * 1e-6).collect();
    check_f32(&floats);
}

/// The vector pair sort through the radix partition: pairs follow their keys, equal keys
/// keep their indices in order, on skewed keys and on one repeated key.
#[test]
fn pairs_through_the_partition() {
    let mut next = xorshift(99);
    for len in [5000usize, 70_000] {
        let keys: Vec<f32> = (0..len)
            .map(|i| {
                if i % 4 == 0 {
                    3.5
                } else {
                    (next() % 10_000) as f32 - 5000.0
                }
            })
            .collect();
        let idx: Vec<u32> = (0..len as u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        check_pairs(&keys, &idx);
    }
    // 50,000 pairs of one key: a bucket no partition splits, merge-sorted by index over
    // several cache-sized chunks.
    let idx: Vec<u32> = (0..50_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    check_pairs(&vec![-1.5; idx.len()], &idx);
}

#[test]
fn f32_special_values() {
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::MIN_POSITIVE / 4.0,
        f32::MAX,
        f32::MIN,
        1.0,
        -1.0,
    ];
    let data: Vec<f32> = (0..2000)
        .map(|i| specials[(i * 7) % specials.len()])
        .collect();
    check_f32(&data);
    let mut sorted = data.clone();
    sort_f32(&mut sorted);
    assert!(
        sorted[0].is_nan() && sorted[0].is_sign_negative(),
        "negative NaN first"
    );
    assert!(sorted[sorted.len() - 1].is_nan() && sorted[sorted.len() - 1].is_sign_positive());
    let first_pos_zero = sorted.iter().position(|x| x.to_bits() == 0).unwrap();
    assert_eq!(
        sorted[first_pos_zero - 1].to_bits(),
        (-0.0f32).to_bits(),
        "-0.0 before +0.0"
    );
}

#[test]
fn one_million_random_keys() {
    let mut next = xorshift(1_000_003);
    let data: Vec<i32> = (0..1 << 20).map(|_| next() as i32).collect();
    check_i32(&data);
    let floats: Vec<f32> = data.iter().map(|&i| i as f32 * 1e-3).collect();
    check_f32(&floats);
}

/// Fails if the public API silently took the scalar path where SIMD exists.
#[test]
fn public_api_runs_the_vector_backend() {
    let mut data: Vec<i32> = (0..1000).rev().collect();
    crate::trace::take();
    sort_i32(&mut data);
    assert_eq!(crate::trace::take(), Some(sort_backend()));
    let mut unsigned: Vec<u32> = (0..1000).rev().collect();
    sort_u32(&mut unsigned);
    assert_eq!(crate::trace::take(), Some(sort_backend()));
    assert!(unsigned.is_sorted());
    #[cfg(tandem_neon)]
    assert_eq!(sort_backend(), Backend::Neon);
    #[cfg(tandem_sse2)]
    if std::arch::is_x86_feature_detected!("sse4.1") {
        assert_eq!(sort_backend(), Backend::Sse41);
    }
}

#[test]
fn pairs_follow_their_keys() {
    let mut next = xorshift(5);
    for len in [0usize, 1, 7, 64, 65, 1000, 5000] {
        let keys: Vec<f32> = (0..len).map(|_| ((next() % 50) as f32) - 25.0).collect();
        let idx: Vec<u32> = (0..len as u32).collect();
        check_pairs(&keys, &idx);
    }
    let mut k = vec![f32::NAN, -0.0, 0.0, -f32::NAN];
    let mut i = vec![0, 1, 2, 3];
    sort_pairs_f32(&mut k, &mut i).unwrap();
    assert_eq!(i, vec![3, 1, 2, 0]);
    assert!(sort_pairs_f32(&mut [1.0], &mut []).is_err());
}

/// The public merge (on NEON the function llvm-mca models) against a merge by the
/// standard sort, on lengths around its 16-key steps.
#[test]
fn merge_of_any_lengths() {
    let mut next = xorshift(16);
    for (la, lb) in [
        (0, 0),
        (0, 5),
        (1, 1),
        (1, 40),
        (15, 17),
        (16, 16),
        (33, 100),
        (64, 64),
        (200, 7),
    ] {
        let mut a: Vec<i32> = (0..la).map(|_| (next() % 1000) as i32).collect();
        let mut b: Vec<i32> = (0..lb).map(|_| (next() % 1000) as i32).collect();
        a.sort_unstable();
        b.sort_unstable();
        let mut want = [a.clone(), b.clone()].concat();
        want.sort_unstable();
        let mut got = vec![0; la + lb];
        merge_i32(&a, &b, &mut got).unwrap();
        assert_eq!(got, want, "{la} + {lb}");
    }
    assert!(merge_i32(&[1], &[2], &mut [0; 3]).is_err());
}

#[test]
fn sort64_sorts_every_block() {
    let mut next = xorshift(64);
    for round in 0..200 {
        let mut block: [i32; 64] = core::array::from_fn(|_| match round % 3 {
            0 => next() as i32,
            1 => (next() % 5) as i32,
            _ => i32::MIN + (next() % 3) as i32,
        });
        let mut want = block;
        want.sort_unstable();
        sort64_i32(&mut block);
        assert_eq!(block, want);
    }
}

#[test]
fn pairs_with_equal_keys_and_the_hybrid_merge() {
    // Many equal keys: only the index tie-break keeps front and back merges disjoint.
    let mut next = xorshift(11);
    let len = 5000;
    let pairs: Vec<Pair> = (0..len)
        .map(|i| Pair {
            key: (next() % 4) as i32,
            idx: (len - i) as u32,
        })
        .collect();
    let mut want = pairs.clone();
    want.sort_unstable();
    let mut got = pairs.clone();
    sort_pairs_dispatch(&mut got);
    assert_eq!(got, want);
    #[cfg(tandem_neon)]
    {
        let mut got = pairs.clone();
        driver_sort(
            Hybrid(vector::Pairs(crate::arch::aarch64::sort::Neon)),
            &mut got,
        );
        assert_eq!(got, want);
    }
    #[cfg(tandem_sse2)]
    if let Some(sse41) = crate::arch::x86_64::sort::Sse41::new() {
        let mut got = pairs.clone();
        driver_sort(Hybrid(vector::Pairs(sse41)), &mut got);
        assert_eq!(got, want);
    }
}
