//! Naive oracles, written for obviousness rather than speed. Tests only.

/// Largest `|x|`, NaN if any element is NaN, 0.0 for an empty slice.
pub(crate) fn absmax(x: &[f32]) -> f32 {
    let mut best = 0.0f32;
    for &v in x {
        if v.is_nan() {
            return f32::NAN;
        }
        if v.abs() > best {
            best = v.abs();
        }
    }
    best
}

/// `sum(x_i^2)` accumulated in f64.
pub(crate) fn sum_squares(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}
