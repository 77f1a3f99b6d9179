//! Shamir's secret sharing over GF(2^8), byte by byte: a secret of any length is split
//! into shares at distinct non-zero points `x`, any `threshold` of which give it back by
//! Lagrange interpolation at 0, and fewer reveal nothing about it. The field is AES's
//! (x^8 + x^4 + x^3 + x + 1), multiplied through log and exp tables of the generator 3.

/// One share: the point and the polynomials' values there, one per secret byte.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// The point (1..=255; a participant's position plus one).
    pub x: u8,
    /// One value per byte of the secret.
    pub y: Vec<u8>,
}

/// Why shares could not be combined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShamirError {
    /// Fewer shares than the threshold.
    #[error("{got} shares, {needed} needed")]
    TooFew {
        /// Shares given.
        got: usize,
        /// The threshold.
        needed: usize,
    },
    /// Two shares at the same point, a point 0, or shares of different lengths.
    #[error("shares at repeated or zero points, or of different lengths")]
    Malformed,
}

/// exp and log tables of GF(2^8) with generator 3.
struct Tables {
    exp: [u8; 510],
    log: [u8; 256],
}

const TABLES: Tables = tables();

const fn tables() -> Tables {
    let mut exp = [0u8; 510];
    let mut log = [0u8; 256];
    let mut x: u8 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x;
        exp[i + 255] = x;
        log[x as usize] = i as u8;
        // x * 3 = x * 2 + x, reduced by the AES polynomial.
        let doubled = (x << 1) ^ if x & 0x80 != 0 { 0x1b } else { 0 };
        x = doubled ^ x;
        i += 1;
    }
    Tables { exp, log }
}

fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    TABLES.exp[TABLES.log[a as usize] as usize + TABLES.log[b as usize] as usize]
}

fn div(a: u8, b: u8) -> u8 {
    debug_assert!(b != 0);
    if a == 0 {
        return 0;
    }
    TABLES.exp[TABLES.log[a as usize] as usize + 255 - TABLES.log[b as usize] as usize]
}

/// Splits `secret` into one share per point of `xs` (distinct, non-zero), any
/// `threshold` (>= 1) of which reconstruct it; `random` gives the polynomials'
/// coefficients (`threshold - 1` bytes per secret byte).
pub fn split(
    secret: &[u8],
    threshold: usize,
    xs: &[u8],
    random: &mut dyn FnMut(&mut [u8]),
) -> Vec<Share> {
    let degree = threshold.max(1) - 1;
    let mut coefficients = vec![0u8; secret.len() * degree];
    random(&mut coefficients);
    xs.iter()
        .map(|&x| Share {
            x,
            y: secret
                .iter()
                .enumerate()
                .map(|(b, &s)| {
                    // Horner, highest coefficient first; the constant term is the secret.
                    let c = &coefficients[b * degree..(b + 1) * degree];
                    let high = c.iter().rev().fold(0u8, |acc, &ci| mul(acc, x) ^ ci);
                    mul(high, x) ^ s
                })
                .collect(),
        })
        .collect()
}

/// The secret of `shares` (the first `threshold` are used).
pub fn combine(shares: &[Share], threshold: usize) -> Result<Vec<u8>, ShamirError> {
    let threshold = threshold.max(1);
    if shares.len() < threshold {
        return Err(ShamirError::TooFew {
            got: shares.len(),
            needed: threshold,
        });
    }
    let used = &shares[..threshold];
    let len = used[0].y.len();
    for (i, s) in used.iter().enumerate() {
        if s.x == 0 || s.y.len() != len || used[..i].iter().any(|o| o.x == s.x) {
            return Err(ShamirError::Malformed);
        }
    }
    // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); minus is xor here.
    let basis: Vec<u8> = used
        .iter()
        .map(|si| {
            used.iter()
                .filter(|sj| sj.x != si.x)
                .fold(1u8, |acc, sj| mul(acc, div(sj.x, sj.x ^ si.x)))
        })
        .collect();
    Ok((0..len)
        .map(|b| {
            used.iter()
                .zip(&basis)
                .fold(0u8, |acc, (s, &l)| acc ^ mul(s.y[b], l))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn random(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut rng = SplitMix64::new(seed);
        move |out: &mut [u8]| out.iter_mut().for_each(|b| *b = rng.next_u64() as u8)
    }

    #[test]
    fn the_field_is_aes_gf256() {
        // FIPS-197's worked product: {57} x {83} = {c1}; and every element has an inverse.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        for a in 1..=255u8 {
            assert_eq!(mul(a, div(1, a)), 1, "{a}");
        }
    }

    #[test]
    fn any_threshold_of_the_shares_gives_the_secret_back() {
        let secret: Vec<u8> = (0..32).map(|i| (i * 37 + 11) as u8).collect();
        let xs: Vec<u8> = (1..=7).collect();
        let shares = split(&secret, 4, &xs, &mut random(3));
        assert_eq!(shares.len(), 7);
        for start in 0..4 {
            let mut subset: Vec<Share> = shares[start..start + 4].to_vec();
            subset.reverse();
            assert_eq!(combine(&subset, 4).unwrap(), secret);
        }
        assert_eq!(
            combine(&shares[..3], 4),
            Err(ShamirError::TooFew { got: 3, needed: 4 })
        );
        let repeated = [
            shares[0].clone(),
            shares[0].clone(),
            shares[1].clone(),
            shares[2].clone(),
        ];
        assert_eq!(combine(&repeated, 4), Err(ShamirError::Malformed));
    }

    #[test]
    fn fewer_than_the_threshold_say_nothing_about_the_secret() {
        // With threshold 2, one share's value at a point is uniform whatever the secret:
        // over all 256 coefficients, secrets 0 and 200 give every value exactly once.
        for secret in [0u8, 200] {
            let mut seen = [0u32; 256];
            for c in 0..=255u8 {
                let share = split(&[secret], 2, &[5], &mut |out: &mut [u8]| out[0] = c);
                seen[share[0].y[0] as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
