//! Reductions over f32 slices: the absmax and squared norm that quantisation scales and
//! norm bounds are built from.

/// The largest absolute value in `x`: `max |x_i|`, `0.0` for an empty slice, NaN if any
/// element is NaN (so a corrupt tensor cannot pass as a small one).
///
/// Exact: the result is one of the `|x_i|`, identical on every backend.
pub fn absmax(x: &[f32]) -> f32 {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::reduce::absmax(x);
    #[cfg(tandem_sse2)]
    return crate::arch::x86_64::reduce::absmax(x);
    #[allow(unreachable_code)]
    crate::scalar::absmax(x)
}

/// `sum(x_i^2)` accumulated in f32 over interleaved partial sums (16 on the SIMD
/// backends, 4 on the scalar one).
///
/// Relative error against the exact sum is at most about `(len / 4 + 16) * 2^-23`, plus
/// at most `2^-149` per element whose square underflows; infinities and NaN propagate.
/// The last bits differ between backends (summation order, FMA or not).
pub fn sum_squares(x: &[f32]) -> f32 {
    #[cfg(tandem_neon)]
    return crate::arch::aarch64::reduce::sum_squares(x);
    #[cfg(tandem_sse2)]
    return crate::arch::x86_64::reduce::sum_squares(x);
    #[allow(unreachable_code)]
    crate::scalar::sum_squares(x)
}

/// The Euclidean norm `sqrt(sum(x_i^2))`, with the accuracy of [`sum_squares`].
pub fn l2_norm(x: &[f32]) -> f32 {
    sum_squares(x).sqrt()
}

#[cfg(test)]
mod tests;
