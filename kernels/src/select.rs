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
    let mut candidates = candidates(x, k);
    let (_, kth, _) = candidates.select_nth_unstable_by(k - 1, |p, q| q.0.cmp(&p.0));
    kth.0
}

/// (magnitude bits, index) of a superset of the `k` largest magnitudes, at least `k`
/// of them; `1 <= k <= x.len()`. One pass over `x` after a threshold estimate from a
/// strided sample; the threshold is lowered and the pass repeated if it kept too few.
fn candidates(x: &[f32], k: usize) -> Vec<(u32, u32)> {
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
            let kept = at_or_above(x, sample[rank]);
            if kept.len() >= k {
                return kept;
            }
            rank *= 4;
        }
    }
    at_or_above(x, 0)
}

/// (bits, index) of every element whose magnitude bits are >= `threshold`.
fn at_or_above(x: &[f32], threshold: u32) -> Vec<(u32, u32)> {
    const LANES: usize = 16;
    let mut kept = Vec::new();
    let (chunks, tail) = x.as_chunks::<LANES>();
    for (c, chunk) in chunks.iter().enumerate() {
        // A max-reduction vectorises well; most chunks hold nothing at or above a high
        // threshold and are skipped after it.
        let max = chunk.iter().fold(0, |m, &v| m.max(abs_bits(v)));
        if max >= threshold {
            for (j, &v) in chunk.iter().enumerate() {
                if abs_bits(v) >= threshold {
                    kept.push((abs_bits(v), (c * LANES + j) as u32));
                }
            }
        }
    }
    let base = chunks.len() * LANES;
    for (j, &v) in tail.iter().enumerate() {
        if abs_bits(v) >= threshold {
            kept.push((abs_bits(v), (base + j) as u32));
        }
    }
    kept
}

/// The `k` largest `|x_i|`: their indices and values (the original signed values),
/// ordered by decreasing magnitude, equal magnitudes by increasing index.
///
/// Exact, with the threshold search of [`kth_largest_abs`]: one pass over `x` in the
/// common case. `k = 0` returns empty
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
    // Order candidates by magnitude, equal magnitudes by index, and keep the first k.
    let order = |p: &(u32, u32), q: &(u32, u32)| q.0.cmp(&p.0).then(p.1.cmp(&q.1));
    let mut picked = candidates(x, k);
    if picked.len() > k {
        picked.select_nth_unstable_by(k - 1, order);
        picked.truncate(k);
    }
    picked.sort_unstable_by(order);
    let indices: Vec<u32> = picked.iter().map(|&(_, i)| i).collect();
    let values = indices.iter().map(|&i| x[i as usize]).collect();
    Ok((indices, values))
}

#[cfg(test)]
mod tests;
