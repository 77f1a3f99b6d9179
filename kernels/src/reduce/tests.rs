//! Every backend of every reduction against the naive oracle, over lengths 0..600,
//! misaligned starts and special values.

use crate::{Backend, reference, scalar, trace};
use proptest::prelude::*;

type Kernel = fn(&[f32]) -> f32;

/// (backend, absmax, sum_squares) for each backend this target can run.
fn backends() -> Vec<(Backend, Kernel, Kernel)> {
    let mut all: Vec<(Backend, Kernel, Kernel)> =
        vec![(Backend::Scalar, scalar::absmax, scalar::sum_squares)];
    #[cfg(tandem_neon)]
    all.push((
        Backend::Neon,
        crate::arch::aarch64::reduce::absmax,
        crate::arch::aarch64::reduce::sum_squares,
    ));
    #[cfg(tandem_sse2)]
    all.push((
        Backend::Sse2,
        crate::arch::x86_64::reduce::absmax,
        crate::arch::x86_64::reduce::sum_squares,
    ));
    all
}

fn check_all(x: &[f32]) {
    let want_max = reference::absmax(x);
    let want_sq = reference::sum_squares(x);
    for (backend, absmax, sum_squares) in backends() {
        let got = absmax(x);
        assert!(
            got.to_bits() == want_max.to_bits() || (got.is_nan() && want_max.is_nan()),
            "{backend:?} absmax of {} values: got {got}, want {want_max}",
            x.len()
        );
        let got = f64::from(sum_squares(x));
        if want_sq.is_finite() && want_sq < f64::from(f32::MAX) {
            // Relative bound of `sum_squares` plus an absolute term for squares that
            // underflow below f32's subnormal range (each loses at most 2^-149).
            let tol = (x.len() as f64 / 4.0 + 16.0) * f64::from(f32::EPSILON) * want_sq
                + x.len() as f64 * 2f64.powi(-149);
            assert!(
                (got - want_sq).abs() <= tol,
                "{backend:?} sum_squares of {} values: got {got}, want {want_sq} +- {tol}",
                x.len()
            );
        }
    }
}

fn special() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -1.0e3f32..1.0e3,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => Just(f32::MIN_POSITIVE / 2.0),
        1 => Just(-1.0e30f32),
    ]
}

proptest! {
    #[test]
    fn reductions_match_reference_misaligned(
        data in proptest::collection::vec(special(), 0..600),
        offset in 0usize..4,
    ) {
        let offset = offset.min(data.len());
        check_all(&data[offset..]);
    }
}

#[test]
fn nan_anywhere_makes_absmax_nan() {
    for len in [1usize, 5, 16, 17, 33, 64, 100] {
        for at in 0..len {
            let mut x: Vec<f32> = (0..len).map(|i| i as f32 - 7.5).collect();
            x[at] = f32::NAN;
            check_all(&x);
            for (backend, absmax, _) in backends() {
                assert!(
                    absmax(&x).is_nan(),
                    "{backend:?} lost the NaN at {at} of {len}"
                );
            }
        }
    }
}

#[test]
fn infinities_propagate() {
    let mut x = vec![1.0f32; 40];
    x[21] = f32::NEG_INFINITY;
    for (backend, absmax, sum_squares) in backends() {
        assert_eq!(absmax(&x), f32::INFINITY, "{backend:?}");
        assert_eq!(sum_squares(&x), f32::INFINITY, "{backend:?}");
    }
}

#[test]
fn empty_input_is_zero() {
    assert_eq!(super::absmax(&[]), 0.0);
    assert_eq!(super::sum_squares(&[]), 0.0);
    assert_eq!(super::l2_norm(&[]), 0.0);
}

#[test]
fn l2_norm_of_3_4_is_5() {
    assert_eq!(super::l2_norm(&[3.0, 4.0]), 5.0);
}

/// Fails if the public API silently fell back to scalar code where SIMD exists.
#[test]
fn public_api_runs_the_simd_backend() {
    let x = vec![0.5f32; 64];
    trace::take();
    super::absmax(&x);
    assert_eq!(trace::take(), Some(crate::active_backend()));
    super::sum_squares(&x);
    assert_eq!(trace::take(), Some(crate::active_backend()));
    #[cfg(tandem_neon)]
    assert_eq!(crate::active_backend(), Backend::Neon);
    #[cfg(tandem_sse2)]
    assert_eq!(crate::active_backend(), Backend::Sse2);
}
