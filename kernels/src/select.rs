//! Top-k selection by magnitude, for top-k sparsification of updates (largest `|g|`).
//!
//! Magnitudes are compared as the bits of `|x|` (`x.to_bits() & 0x7fff_ffff`): for
//! non-negative floats integer order is numeric order, and NaN (any payload) ranks above
//! +inf, so a NaN in an update is always selected and so cannot hide.

use crate::KernelError;

/// Inputs up to this length are selected exactly without sampling.
const SAMPLE_MIN_LEN: usize = 1 << 14;
/// Keys sampled to estimate the threshold.
const SAMPLES: usize = 2048;

#[inline]
fn abs_bits(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// The `k`-th largest `|x_i|` (k = 1 is the largest), exactly.
///
/// For long inputs it first estimates a threshold from a strided sample (as DGC does),
/// keeps only the candidates at or above it and selects among those, so one pass over
/// `x` does most of the work; if the estimate is too high it lowers it and retries, and
/// the answer is always the exact k-th value. NaN ranks above +inf.
///
/// Errors if `k` is 0 or greater than `x.len()`.
pub fn kth_largest_abs(x: &[f32], k: usize) -> Result<f32, KernelError> {
    check_k(x.len(), k)?;
    Ok(f32::from_bits(kth_largest_bits(x, k)))
}

fn check_k(len: usize, k: usize) -> Result<(), KernelError> {
    if k == 0 || k > len {
        return Err(KernelError::OutOfRange {
            name: "k",
            value: k.to_string(),
            range: "1..=len",
        });
    }
    Ok(())
}

/// The k-th largest of the magnitude bits; `1 <= k <= x.len()`.
fn kth_largest_bits(x: &[f32], k: usize) -> u32 {
    let n = x.len();
    if n >= SAMPLE_MIN_LEN {
        // Sample rank of the threshold: the expected k/n quantile, widened by ~4 standard
        // deviations of the sample count so a retry is rare.
        let expected = k as f64 * SAMPLES as f64 / n as f64;
        let mut rank = (expected + 4.0 * expected.sqrt() + 4.0).ceil() as usize;
        let stride = n / SAMPLES;
        let mut sample: Vec<u32> = (0..SAMPLES).map(|i| abs_bits(x[i * stride])).collect();
        sample.sort_unstable_by(|a, b| b.cmp(a));
        while rank < SAMPLES {
            let threshold = sample[rank];
            let candidates: Vec<u32> = x
                .iter()
                .map(|&v| abs_bits(v))
                .filter(|&b| b >= threshold)
                .collect();
            if candidates.len() >= k {
                return select_desc(candidates, k);
            }
            rank *= 4;
        }
    }
    select_desc(x.iter().map(|&v| abs_bits(v)).collect(), k)
}

/// The k-th largest (1-based) of `keys`.
fn select_desc(mut keys: Vec<u32>, k: usize) -> u32 {
    let (_, kth, _) = keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    *kth
}

/// The `k` largest `|x_i|`: their indices and values (the original signed values),
/// ordered by decreasing magnitude, equal magnitudes by increasing index.
///
/// Exact, with the threshold search of [`kth_largest_abs`]. `k = 0` returns empty
/// vectors; `k > x.len()` is an error.
pub fn top_k_abs(x: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>), KernelError> {
    if k == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    check_k(x.len(), k)?;
    if x.len() > u32::MAX as usize {
        return Err(KernelError::OutOfRange {
            name: "x.len()",
            value: x.len().to_string(),
            range: "0..=u32::MAX (indices are u32)",
        });
    }
    let threshold = kth_largest_bits(x, k);
    // Everything strictly above the threshold is in; ties at the threshold fill the
    // remaining places in index order.
    let above = x.iter().filter(|&&v| abs_bits(v) > threshold).count();
    let mut ties_left = k - above;
    let mut picked: Vec<(u32, u32)> = Vec::with_capacity(k);
    for (i, &v) in x.iter().enumerate() {
        let b = abs_bits(v);
        if b > threshold {
            picked.push((b, i as u32));
        } else if b == threshold && ties_left > 0 {
            picked.push((b, i as u32));
            ties_left -= 1;
        }
    }
    picked.sort_unstable_by(|p, q| q.0.cmp(&p.0).then(p.1.cmp(&q.1)));
    let indices: Vec<u32> = picked.iter().map(|&(_, i)| i).collect();
    let values = indices.iter().map(|&i| x[i as usize]).collect();
    Ok((indices, values))
}

#[cfg(test)]
mod tests;
