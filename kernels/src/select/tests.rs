//! Selection against a full sort by magnitude.

use super::*;
use crate::testutil::xorshift;
use proptest::prelude::*;

/// Oracle: (index, value) sorted by decreasing |x| bits, then increasing index.
fn oracle(x: &[f32]) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = x.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
    all.sort_by(|p, q| abs_bits(q.1).cmp(&abs_bits(p.1)).then(p.0.cmp(&q.0)));
    all
}

fn check(x: &[f32], k: usize) {
    let want = oracle(x);
    let kth = kth_largest_abs(x, k).unwrap();
    assert_eq!(
        kth.to_bits(),
        abs_bits(want[k - 1].1),
        "k-th of {} with k={k}",
        x.len()
    );
    let (idx, vals) = top_k_abs(x, k).unwrap();
    assert_eq!(idx.len(), k);
    for (j, (&i, &v)) in idx.iter().zip(&vals).enumerate() {
        assert_eq!(i, want[j].0, "index {j} of top-{k}");
        assert_eq!(v.to_bits(), want[j].1.to_bits());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn small_inputs_match_full_sort(
        x in proptest::collection::vec(-100.0f32..100.0, 1..600),
        k_frac in 0.0f64..1.0,
    ) {
        let k = ((x.len() as f64 * k_frac) as usize).clamp(1, x.len());
        check(&x, k);
    }

    #[test]
    fn ties_are_broken_by_index(x in proptest::collection::vec(-3i8..3, 1..500), k_frac in 0.0f64..1.0) {
        let x: Vec<f32> = x.into_iter().map(f32::from).collect();
        let k = ((x.len() as f64 * k_frac) as usize).clamp(1, x.len());
        check(&x, k);
    }
}

#[test]
fn sampled_path_is_exact_on_long_inputs() {
    let mut next = xorshift(99);
    let x: Vec<f32> = (0..200_000)
        .map(|_| (next() as i32) as f32 * 1e-7)
        .collect();
    for k in [1, 2, 100, 2_000, 20_000, 199_999, 200_000] {
        check(&x, k);
    }
}

#[test]
fn sampled_path_survives_a_misleading_sample() {
    // The strided sample sees only zeros; the large values sit between sample points.
    let n = 1 << 16;
    let stride = n / SAMPLES;
    let x: Vec<f32> = (0..n)
        .map(|i| if i % stride == 1 { i as f32 } else { 0.0 })
        .collect();
    for k in [1, 10, SAMPLES, SAMPLES + 1, n / 2] {
        check(&x, k);
    }
}

#[test]
fn nan_and_infinities_rank_highest() {
    let mut x = vec![1.0f32; 100];
    x[10] = f32::NEG_INFINITY;
    x[20] = f32::NAN;
    let (idx, _) = top_k_abs(&x, 2).unwrap();
    assert_eq!(idx, vec![20, 10]);
    assert!(kth_largest_abs(&x, 1).unwrap().is_nan());
    assert_eq!(kth_largest_abs(&x, 2).unwrap(), f32::INFINITY);
}

#[test]
fn bad_k_is_an_error() {
    assert!(kth_largest_abs(&[1.0], 0).is_err());
    assert!(kth_largest_abs(&[1.0], 2).is_err());
    assert!(kth_largest_abs(&[], 1).is_err());
    assert!(top_k_abs(&[1.0], 2).is_err());
    assert_eq!(top_k_abs(&[1.0], 0).unwrap(), (vec![], vec![]));
}
