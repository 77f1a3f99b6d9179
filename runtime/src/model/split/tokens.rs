//! Only real tokens cross the cut: padded rows carry nothing the top uses (they are
//! masked as keys and excluded from pooling), so they are dropped before encoding and
//! restored as zeros after decoding.

/// Rows `b * seq + p` with `p < seq_lens[b]` of a `[batch, seq, width]` tensor, in order.
pub fn pack(padded: &[f32], seq_lens: &[usize], seq: usize, width: usize) -> Vec<f32> {
    let mut packed = Vec::with_capacity(seq_lens.iter().sum::<usize>() * width);
    for (b, &len) in seq_lens.iter().enumerate() {
        let start = b * seq * width;
        packed.extend_from_slice(&padded[start..start + len * width]);
    }
    packed
}

/// The inverse of [`pack`]: padded rows are zero. `packed` must hold
/// `sum(seq_lens) * width` values.
pub fn unpack(packed: &[f32], seq_lens: &[usize], seq: usize, width: usize) -> Vec<f32> {
    let mut padded = vec![0.0; seq_lens.len() * seq * width];
    let mut at = 0;
    for (b, &len) in seq_lens.iter().enumerate() {
        let n = len * width;
        padded[b * seq * width..][..n].copy_from_slice(&packed[at..at + n]);
        at += n;
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_drops_padding_and_unpack_restores_zeros() {
        // batch 2, seq 3, width 2; lengths 1 and 3.
        let padded: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let packed = pack(&padded, &[1, 3], 3, 2);
        assert_eq!(packed, [0.0, 1.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
        let back = unpack(&packed, &[1, 3], 3, 2);
        assert_eq!(
            back,
            [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
        );
    }
}
