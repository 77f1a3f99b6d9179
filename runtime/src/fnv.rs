//! FNV-1a, 64-bit: tiny, stable across platforms and versions, and well spread over short
//! inputs. For names, fingerprints and checksums against accidental damage, never for
//! anything an attacker controls.

/// The FNV-1a 64-bit hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    extend(0xcbf2_9ce4_8422_2325, bytes)
}

/// `hash` continued over `bytes` (for hashing several pieces as one).
pub fn extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_published_test_vectors() {
        // From the FNV reference (isthe.com/chongo/tech/comp/fnv): "" and "a".
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            super::extend(super::fnv1a64(b"fo"), b"o"),
            super::fnv1a64(b"foo")
        );
    }
}
