use super::*;
use proptest::prelude::*;

fn naive_xq(x: &[f32], n: usize, d: usize, q: &[f32], r: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * r];
    for i in 0..n {
        for j in 0..r {
            out[i * r + j] = (0..d)
                .map(|k| f64::from(x[i * d + k]) * f64::from(q[k * r + j]))
                .sum();
        }
    }
    out
}

/// The transpose of `a` (rows x cols).
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

fn data(len: usize, seed: u64) -> Vec<f32> {
    random_start(len, seed)
}

fn assert_close(got: &[f32], want: &[f64], scale: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= 1e-5 * scale + 1e-6,
            "element {i}: {g} vs {w}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn xq_and_xtp_match_a_naive_product(n in 0usize..37, d in 0usize..530, r in 0usize..=64, seed: u64) {
        let x = data(n * d, seed);
        let q = data(d * r, seed ^ 1);
        let scale = (d as f64).sqrt() * 4.0;
        let mut out = vec![f32::NAN; n * r];
        matmul_xq(&x, n, d, &q, r, &mut out).unwrap();
        assert_close(&out, &naive_xq(&x, n, d, &q, r), scale);
        let mut scalar = vec![f32::NAN; n * r];
        matmul_xq_scalar(&x, n, d, &q, r, &mut scalar).unwrap();
        assert_close(&scalar, &naive_xq(&x, n, d, &q, r), scale);

        let p = data(n * r, seed ^ 2);
        let xt = transpose(&x, n, d);
        let mut out = vec![f32::NAN; d * r];
        matmul_xtp(&x, n, d, &p, r, &mut out).unwrap();
        assert_close(&out, &naive_xq(&xt, d, n, &p, r), (n as f64).sqrt() * 4.0);
        let mut scalar = vec![f32::NAN; d * r];
        matmul_xtp_scalar(&x, n, d, &p, r, &mut scalar).unwrap();
        assert_close(&scalar, &naive_xq(&xt, d, n, &p, r), (n as f64).sqrt() * 4.0);
    }
}

#[test]
fn wrong_lengths_and_ranks_are_errors() {
    let mut out = vec![0.0; 4];
    assert!(matches!(
        matmul_xq(&[0.0; 5], 2, 3, &[0.0; 6], 2, &mut out),
        Err(KernelError::LengthMismatch { what: "x", .. })
    ));
    assert!(matches!(
        matmul_xq(&[0.0; 65], 1, 1, &[0.0; 65], 65, &mut [0.0; 65]),
        Err(KernelError::OutOfRange { name: "rank", .. })
    ));
    assert!(matches!(
        matmul_xtp(&[0.0; 6], 2, 3, &[0.0; 4], 2, &mut [0.0; 5]),
        Err(KernelError::LengthMismatch { what: "out", .. })
    ));
}

fn max_orthonormality_error(p: &[f32], n: usize, r: usize, rank_cols: &[usize]) -> f64 {
    let mut worst: f64 = 0.0;
    for &a in rank_cols {
        for &b in rank_cols {
            let dot: f64 = (0..n)
                .map(|i| f64::from(p[i * r + a]) * f64::from(p[i * r + b]))
                .sum();
            let want = if a == b { 1.0 } else { 0.0 };
            worst = worst.max((dot - want).abs());
        }
    }
    worst
}

#[test]
fn cholesky_qr2_orthonormalises_a_well_conditioned_panel() {
    for (n, r) in [(2048, 8), (805, 64), (9, 3), (64, 64)] {
        let mut p = data(n * r, n as u64);
        let done = orthonormalize(&mut p, n, r).unwrap();
        assert_eq!(
            done,
            Orthonormalized {
                rank: r,
                fallback: false
            }
        );
        let cols: Vec<usize> = (0..r).collect();
        assert!(max_orthonormality_error(&p, n, r, &cols) < 1e-5, "{n}x{r}");
    }
}

#[test]
fn rank_deficient_panel_falls_back_and_reports_its_rank() {
    let (n, r) = (100, 6);
    let mut p = data(n * r, 7);
    // Column 3 = column 0 + column 1; column 5 = 0.
    for i in 0..n {
        p[i * r + 3] = p[i * r] + p[i * r + 1];
        p[i * r + 5] = 0.0;
    }
    let done = orthonormalize(&mut p, n, r).unwrap();
    assert_eq!(
        done,
        Orthonormalized {
            rank: 4,
            fallback: true
        }
    );
    assert!(max_orthonormality_error(&p, n, r, &[0, 1, 2, 4]) < 1e-5);
    assert!((0..n).all(|i| p[i * r + 3] == 0.0 && p[i * r + 5] == 0.0));
}

#[test]
fn truncated_svd_recovers_a_known_spectrum_and_reconstructs() {
    // A = U0 diag(10, 5, 2, 1) V0^T, exactly rank 4.
    let (m, n, k) = (300, 120, 4);
    let mut u0 = data(m * k, 1);
    orthonormalize(&mut u0, m, k).unwrap();
    let mut v0 = data(n * k, 2);
    orthonormalize(&mut v0, n, k).unwrap();
    let sig = [10.0f32, 5.0, 2.0, 1.0];
    let mut us = u0.clone();
    for row in us.chunks_exact_mut(k) {
        for (x, s) in row.iter_mut().zip(sig) {
            *x *= s;
        }
    }
    let mut a = vec![0.0; m * n];
    reconstruct(&us, m, k, &v0, n, &mut a).unwrap();
    let svd = truncated_svd(&a, m, n, k, 1, 42).unwrap();
    for (got, want) in svd.s.iter().zip(sig) {
        assert!((got - want).abs() < 1e-3 * want, "{got} vs {want}");
    }
    let mut us = svd.u.clone();
    for row in us.chunks_exact_mut(k) {
        for (x, s) in row.iter_mut().zip(&svd.s) {
            *x *= s;
        }
    }
    let mut back = vec![0.0; m * n];
    reconstruct(&us, m, k, &svd.v, n, &mut back).unwrap();
    let err: f64 = a
        .iter()
        .zip(&back)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    assert!(err / norm < 1e-4, "relative error {}", err / norm);
}
