//! Reductions over f32 slices: the absmax and squared norm that quantisation scales and
//! norm bounds are built from.

/// The largest absolute value in `x`: `max |x_i|`, `0.0` for an empty slice, NaN if any
/// element is NaN (so a corrupt tensor cannot pass as a small one).
///
/// Exact: the result is one of the `|x_i|`, identical on every backend.
pub fn absmax(x: &[f32]) -> f32 {
    #[cfg(target_arch = "aarch64")]
    return crate::arch::aarch64::reduce::absmax(x);
    #[cfg(target_arch = "x86_64")]
    return crate::arch::x86_64::reduce::absmax(x);
    #[allow(unreachable_code)]
    crate::scalar::absmax(x)
}

/// `sum(x_i^2)` accumulated in f32 over 16 interleaved partial sums.
///
/// Relative error against the exact sum is at most about `(len / 16 + 4) * 2^-24`
/// (pairwise-like accumulation); infinities and NaN propagate.
pub fn sum_squares(x: &[f32]) -> f32 {
    #[cfg(target_arch = "aarch64")]
    return crate::arch::aarch64::reduce::sum_squares(x);
    #[cfg(target_arch = "x86_64")]
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
