//! Updates as integers for secure aggregation: each value clipped to `[-clip, clip]`,
//! scaled to `value_bits` signed bits with stochastic rounding (unbiased), and held in
//! the ring of integers modulo `2^ring_bits`, where `ring_bits` leaves room for the sum
//! of every participant's value without wrapping. Masks are uniform in the same ring, so
//! a masked value says nothing about the value under it; the wire carries
//! `ceil(ring_bits / 8)` bytes per value.

use super::SecAggError;
use crate::rng::SplitMix64;

/// The fixed-point encoding of one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedPoint {
    clip: f32,
    value_bits: u8,
    ring_bits: u8,
}

impl FixedPoint {
    /// Values in `[-clip, clip]` at `value_bits` (2..=24) signed bits, summed over at
    /// most `participants` (1..=65,536); the ring must fit in 32 bits.
    pub fn new(clip: f32, value_bits: u8, participants: usize) -> Result<Self, SecAggError> {
        let headroom = usize::BITS - participants.saturating_sub(1).leading_zeros();
        let ring_bits = u32::from(value_bits) + headroom;
        let valid = clip.is_finite()
            && clip > 0.0
            && (2..=24).contains(&value_bits)
            && (1..=65_536).contains(&participants)
            && ring_bits <= 32;
        if !valid {
            return Err(SecAggError::Encoding {
                clip,
                value_bits,
                participants,
            });
        }
        Ok(Self {
            clip,
            value_bits,
            ring_bits: ring_bits as u8,
        })
    }

    /// The largest magnitude of a scaled value.
    fn max_level(&self) -> f64 {
        f64::from((1u32 << (self.value_bits - 1)) - 1)
    }

    /// The ring's modulus less one (values are kept `& mask`).
    pub fn mask(&self) -> u32 {
        u32::MAX >> (32 - u32::from(self.ring_bits))
    }

    /// Bits of the ring.
    pub fn ring_bits(&self) -> u8 {
        self.ring_bits
    }

    /// Bytes of one value on the wire.
    pub fn value_bytes(&self) -> usize {
        usize::from(self.ring_bits).div_ceil(8)
    }

    /// `values` as ring elements; `seed` drives the stochastic rounding. A level never
    /// passes the largest one (the product is taken in f64 and the rounded level clamped:
    /// in f32, `clip * (max / clip)` can land above `max`), so the ring's headroom holds
    /// every participant at the clip.
    pub fn encode(&self, values: &[f32], seed: u64) -> Vec<u32> {
        let max = self.max_level();
        let scale = max / f64::from(self.clip);
        let mut rng = SplitMix64::new(seed);
        values
            .iter()
            .map(|&v| {
                let scaled = f64::from(v.clamp(-self.clip, self.clip)) * scale;
                let floor = scaled.floor();
                let level = floor + f64::from(u8::from(rng.next_f64() < scaled - floor));
                (level.clamp(-max, max) as i64 as u32) & self.mask()
            })
            .collect()
    }

    /// The values of a sum of encoded updates (ring elements, read as signed).
    pub fn decode(&self, sum: &[u32]) -> Vec<f32> {
        let shift = 32 - u32::from(self.ring_bits);
        let unit = f64::from(self.clip) / self.max_level();
        sum.iter()
            .map(|&s| (f64::from(((s << shift) as i32) >> shift) * unit) as f32)
            .collect()
    }

    /// Ring elements as little-endian bytes, [`FixedPoint::value_bytes`] each.
    pub fn pack(&self, values: &[u32]) -> Vec<u8> {
        let width = self.value_bytes();
        let mut out = Vec::with_capacity(values.len() * width);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes()[..width]);
        }
        out
    }

    /// The `count` ring elements of `bytes` ([`FixedPoint::pack`]'s layout).
    pub fn unpack(&self, bytes: &[u8], count: usize) -> Result<Vec<u32>, SecAggError> {
        let width = self.value_bytes();
        if bytes.len() != count * width {
            return Err(SecAggError::Length {
                expected: count * width,
                got: bytes.len(),
            });
        }
        Ok(bytes
            .chunks_exact(width)
            .map(|c| {
                let mut word = [0u8; 4];
                word[..width].copy_from_slice(c);
                u32::from_le_bytes(word) & self.mask()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_holds_the_sum_of_every_participant() {
        let fixed = FixedPoint::new(1.0, 8, 100).unwrap();
        // 100 participants need 7 bits more than one value: 15 bits, 2 bytes a value.
        assert_eq!((fixed.ring_bits(), fixed.value_bytes()), (15, 2));
        let one = fixed.encode(&[-1.0, 1.0, 5.0], 1);
        let mut sum = vec![0u32; 3];
        for _ in 0..100 {
            for (s, v) in sum.iter_mut().zip(&one) {
                *s = s.wrapping_add(*v) & fixed.mask();
            }
        }
        let decoded = fixed.decode(&sum);
        for (d, want) in decoded.iter().zip([-100.0f32, 100.0, 100.0]) {
            assert!((d - want).abs() < 1e-3, "{decoded:?}");
        }
        assert!(FixedPoint::new(1.0, 24, 1 << 10).is_err());
        assert!(FixedPoint::new(0.0, 8, 10).is_err());
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_packing_round_trips() {
        let fixed = FixedPoint::new(1.0, 4, 10).unwrap();
        // 0.05 is 0.35 of a level (1/7): the mean of many roundings comes back.
        let values = vec![0.05f32; 20_000];
        let encoded = fixed.encode(&values, 9);
        let mean: f32 = fixed.decode(&encoded).iter().sum::<f32>() / values.len() as f32;
        assert!((mean - 0.05).abs() < 0.003, "{mean}");
        let packed = fixed.pack(&encoded);
        assert_eq!(packed.len(), values.len() * fixed.value_bytes());
        assert_eq!(fixed.unpack(&packed, values.len()).unwrap(), encoded);
        assert!(fixed.unpack(&packed[1..], values.len()).is_err());
    }

    /// A value at the clip never rounds past the largest level, so the ring's headroom
    /// holds every participant at +clip: in f32, `0.1 * (8388607 / 0.1)` is 8388607.5 and
    /// rounded up half the time to 2^23, and 32767.002 at clip 0.21 and 16 bits.
    #[test]
    fn a_value_at_the_clip_stays_within_the_largest_level() {
        for (clip, bits) in [(0.1f32, 24u8), (0.21, 16), (1.0, 8), (0.3, 12)] {
            let participants = 4;
            let fixed = FixedPoint::new(clip, bits, participants).unwrap();
            let max_level = (1i64 << (bits - 1)) - 1;
            for value in [clip, -clip, 2.0 * clip] {
                let one = fixed.encode(&vec![value; 4096], 3);
                let shift = 32 - u32::from(fixed.ring_bits());
                let levels: Vec<i64> = one
                    .iter()
                    .map(|&v| i64::from(((v << shift) as i32) >> shift))
                    .collect();
                assert!(
                    levels.iter().all(|l| l.abs() <= max_level),
                    "clip {clip} at {bits} bits: value {value} rounded past level {max_level}"
                );
                // Every participant at the clip: the sum keeps its sign.
                let mut sum = vec![0u32; one.len()];
                for _ in 0..participants {
                    for (s, v) in sum.iter_mut().zip(&one) {
                        *s = s.wrapping_add(*v) & fixed.mask();
                    }
                }
                let bound = participants as f32 * clip * 1.0001;
                assert!(
                    fixed
                        .decode(&sum)
                        .iter()
                        .all(|d| d.signum() == value.signum() && d.abs() <= bound),
                    "clip {clip} at {bits} bits: the sum of {participants} at {value} wrapped"
                );
            }
        }
    }
}
