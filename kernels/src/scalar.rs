//! Portable scalar kernels: the fallback on targets without a SIMD backend, and the tail
//! loop of the SIMD backends.

/// See [`crate::reduce::absmax`].
pub(crate) fn absmax(x: &[f32]) -> f32 {
    #[cfg(test)]
    crate::trace::record(crate::Backend::Scalar);
    absmax_tail(0.0, x)
}

/// Folds `x` into a running absmax `acc` (NaN is sticky).
pub(crate) fn absmax_tail(acc: f32, x: &[f32]) -> f32 {
    x.iter().fold(acc, |acc, &v| {
        let a = v.abs();
        // `a > acc` is false for NaN, so test NaN explicitly to keep it sticky.
        if a.is_nan() || acc.is_nan() {
            f32::NAN
        } else if a > acc {
            a
        } else {
            acc
        }
    })
}

/// See [`crate::reduce::sum_squares`].
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    #[cfg(test)]
    crate::trace::record(crate::Backend::Scalar);
    // Four independent accumulators, like the SIMD lanes, so rounding is comparable.
    let mut acc = [0.0f32; 4];
    let mut chunks = x.chunks_exact(4);
    for c in &mut chunks {
        for lane in 0..4 {
            acc[lane] = c[lane].mul_add(c[lane], acc[lane]);
        }
    }
    sum_squares_tail((acc[0] + acc[1]) + (acc[2] + acc[3]), chunks.remainder())
}

/// Adds the squares of `x` to `acc`.
pub(crate) fn sum_squares_tail(acc: f32, x: &[f32]) -> f32 {
    x.iter().fold(acc, |acc, &v| v.mul_add(v, acc))
}

/// int8 codes of `x * inv`, rounded to nearest (ties to even) and clamped to
/// `-127..=127`; the reference and tail loop of the SIMD quantisers.
pub(crate) fn quantize_nearest(x: &[f32], inv: f32, codes: &mut [i8]) {
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = (v * inv).clamp(-127.0, 127.0).round_ties_even() as i8;
    }
}

/// `out[i] = codes[i] * scale`; the reference and tail loop of the SIMD dequantisers.
pub(crate) fn dequantize(codes: &[i8], scale: f32, out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = f32::from(c) * scale;
    }
}
