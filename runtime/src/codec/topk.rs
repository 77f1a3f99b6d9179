//! `TopK` with error feedback: the sender adds what it has not yet sent (the residual)
//! to each new tensor, sends the `k` largest entries, and keeps the rest for next time.
//! Layout: `k` varint index gaps (first index, then `index - previous - 1`), then `k`
//! f32 values; `k = ceil(len * ratio)` is implied by the shape.

use super::CodecError;
use super::format::{Reader, Writer};
use tandem_kernels::top_k_abs;

#[derive(Clone, Debug, Default)]
pub(super) struct State {
    residual: Vec<f32>,
    /// Input plus residual of the encode in progress.
    pending: Vec<f32>,
}

/// Bytes of one entry at most: a 5-byte varint gap and its f32.
pub(super) const MAX_ENTRY_BYTES: usize = 9;
/// Bytes of one entry at least: a 1-byte gap and its f32.
const MIN_ENTRY_BYTES: usize = 5;

/// Entries kept for `len` values at `ratio_ppm`: at least one if any are kept.
pub(super) fn count(len: usize, ratio_ppm: u32) -> usize {
    if ratio_ppm == 0 || len == 0 {
        return 0;
    }
    ((len as u64 * u64::from(ratio_ppm)).div_ceil(1_000_000) as usize).clamp(1, len)
}

impl State {
    pub(super) fn encode(&mut self, h: &[f32], ratio_ppm: u32) -> Result<Vec<u8>, CodecError> {
        self.with_residual_added(h);
        let k = count(h.len(), ratio_ppm);
        let (mut idx, _) = top_k_abs(&self.pending, k)?;
        idx.sort_unstable();
        let mut w = Writer::with_capacity(k * 6);
        let mut prev: Option<u32> = None;
        for &i in &idx {
            w.varint(prev.map_or(i, |p| i - p - 1));
            prev = Some(i);
        }
        let values: Vec<f32> = idx.iter().map(|&i| self.pending[i as usize]).collect();
        w.f32s(&values);
        Ok(w.finish())
    }

    /// `h` plus the residual, as the encode in progress (a residual of another length,
    /// from another tensor shape, is dropped); [`State::sent`] then keeps what of it
    /// was not sent. Also the error feedback of [`super::acp`].
    pub(super) fn with_residual_added(&mut self, h: &[f32]) -> &[f32] {
        if self.residual.len() != h.len() {
            self.residual = vec![0.0; h.len()];
        }
        self.pending = h.iter().zip(&self.residual).map(|(a, b)| a + b).collect();
        &self.pending
    }

    /// The error-feedback residual (what has not been sent yet).
    pub(super) fn residual(&self) -> &[f32] {
        &self.residual
    }

    /// State with `residual` carried over (from a checkpoint).
    pub(super) fn with_residual(residual: Vec<f32>) -> Self {
        Self {
            residual,
            pending: Vec::new(),
        }
    }

    /// What was sent: the residual becomes everything that was not.
    pub(super) fn sent(&mut self, decoded: &[f32]) {
        self.residual = self
            .pending
            .iter()
            .zip(decoded)
            .map(|(a, b)| a - b)
            .collect();
    }
}

pub(super) fn decode(r: &mut Reader, len: usize, ratio_ppm: u32) -> Result<Vec<f32>, CodecError> {
    let k = count(len, ratio_ppm);
    // The payload's size bounds `k` before anything is reserved for it.
    let found = r.remaining();
    if found < k * MIN_ENTRY_BYTES {
        return Err(CodecError::Truncated {
            expected: k * MIN_ENTRY_BYTES,
            found,
        });
    }
    if found > k * MAX_ENTRY_BYTES {
        return Err(CodecError::Oversized {
            expected: k * MAX_ENTRY_BYTES,
            found,
        });
    }
    let mut idx = Vec::with_capacity(k);
    let mut next: u64 = 0;
    for _ in 0..k {
        let at = next + u64::from(r.varint()?);
        if at >= len as u64 {
            return Err(CodecError::Inconsistent("TopK index out of range"));
        }
        idx.push(at as usize);
        next = at + 1;
    }
    let values = r.f32s(k)?;
    let mut out = vec![0.0; len];
    for (i, v) in idx.into_iter().zip(values) {
        out[i] = v;
    }
    Ok(out)
}
