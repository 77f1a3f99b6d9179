//! The primitives of secure aggregation: X25519 key pairs, keys derived from an
//! agreement (SHA-256 over a label, the round and the shared point), ChaCha20 mask
//! streams in the ring, and ChaCha20-Poly1305 for the shares in transit.

use super::SecAggError;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::digest::{Context, SHA256};
use x25519_dalek::{PublicKey, StaticSecret};

/// Labels keep the two uses of an agreement apart.
pub(super) const MASK_LABEL: &[u8] = b"tandem secagg pairwise mask";
pub(super) const SHARE_LABEL: &[u8] = b"tandem secagg share encryption";

/// Fills its argument with random bytes.
pub type Random<'a> = &'a mut dyn FnMut(&mut [u8]);

/// 32 random bytes.
pub(super) fn random32(random: Random) -> [u8; 32] {
    let mut out = [0u8; 32];
    random(&mut out);
    out
}

/// An X25519 secret and its public key.
pub(super) fn key_pair(random: Random) -> (StaticSecret, [u8; 32]) {
    let secret = StaticSecret::from(random32(random));
    let public = PublicKey::from(&secret).to_bytes();
    (secret, public)
}

/// The key `label` derives from `secret`'s agreement with `public` in `round`; a public
/// key of small order (which would fix the agreement) is refused as `from`'s.
pub(super) fn agreed(
    secret: &StaticSecret,
    public: &[u8; 32],
    label: &[u8],
    round: u64,
    from: usize,
) -> Result<[u8; 32], SecAggError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(SecAggError::Unexpected(from));
    }
    let mut hash = Context::new(&SHA256);
    hash.update(label);
    hash.update(&round.to_le_bytes());
    hash.update(shared.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(hash.finish().as_ref());
    Ok(key)
}

/// Adds (or with `negate`, subtracts) the mask stream of `seed` to `acc`, modulo `mask + 1`.
pub(super) fn apply_mask(acc: &mut [u32], seed: &[u8; 32], negate: bool, mask: u32) {
    let mut stream = ChaCha20Rng::from_seed(*seed);
    let mut block = [0u8; 4096];
    for chunk in acc.chunks_mut(block.len() / 4) {
        let bytes = &mut block[..chunk.len() * 4];
        stream.fill_bytes(bytes);
        for (a, word) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            *a = if negate {
                a.wrapping_sub(m)
            } else {
                a.wrapping_add(m)
            } & mask;
        }
    }
}

/// The AEAD of one direction of a pair: the nonce names sender and recipient, so the
/// key both share never meets the same nonce twice in a round.
fn aead(key: &[u8; 32], from: usize, to: usize) -> (LessSafeKey, Nonce) {
    // A 32-byte key is what CHACHA20_POLY1305 takes.
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte key"));
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&(from as u32).to_le_bytes());
    nonce[4..8].copy_from_slice(&(to as u32).to_le_bytes());
    (key, Nonce::assume_unique_for_key(nonce))
}

/// `plain` sealed from `from` to `to` under their agreed `key`.
pub(super) fn seal(key: &[u8; 32], from: usize, to: usize, round: u64, plain: &[u8]) -> Vec<u8> {
    let (key, nonce) = aead(key, from, to);
    let mut sealed = plain.to_vec();
    // Sealing in place fails only past ChaCha20's 256 GB message limit.
    key.seal_in_place_append_tag(nonce, Aad::from(round.to_le_bytes()), &mut sealed)
        .expect("a share is far below the AEAD's limit");
    sealed
}

/// The plaintext of a share sealed from `from` to `to`, if it is authentic.
pub(super) fn open(
    key: &[u8; 32],
    from: usize,
    to: usize,
    round: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let (key, nonce) = aead(key, from, to);
    let mut buffer = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(round.to_le_bytes()), &mut buffer)
        .map_err(|_| SecAggError::Decrypt(from))?;
    Ok(plain.to_vec())
}
