//! A device's side of a secure-aggregation round (see the module above for the steps).

use super::crypto::{self, MASK_LABEL, Random, SHARE_LABEL};
use super::messages::{
    MaskedInput, PublicKeys, Reveal, Reveals, SealedShares, Secret, ShareBundle, UnmaskRequest,
};
use super::shamir::{self, Share};
use super::{SecAggError, Settings};
use std::collections::BTreeMap;
use x25519_dalek::StaticSecret;

/// Where a device is in its round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Keys,
    Shared,
    Masked,
    Done,
}

/// The two shares a neighbour entrusted to this device.
struct Held {
    mask_key: Share,
    self_mask: Share,
}

/// One device in one round.
pub struct Client {
    me: usize,
    settings: Settings,
    neighbours: Vec<usize>,
    cipher_secret: StaticSecret,
    mask_secret: StaticSecret,
    keys: PublicKeys,
    self_seed: [u8; 32],
    /// Neighbours' public keys, as the cloud relayed them.
    peers: BTreeMap<usize, PublicKeys>,
    /// Shares entrusted to it, by owner.
    held: BTreeMap<usize, Held>,
    phase: Phase,
}

impl Client {
    /// Participant `me` of a round of `settings`, with fresh keys from `random`.
    pub fn new(me: usize, settings: Settings, random: Random) -> Result<Self, SecAggError> {
        if me >= settings.participants {
            return Err(SecAggError::Unexpected(me));
        }
        let (cipher_secret, cipher) = crypto::key_pair(random);
        let (mask_secret, mask) = crypto::key_pair(random);
        let neighbours = settings.graph().swap_remove(me);
        Ok(Self {
            me,
            settings,
            neighbours,
            cipher_secret,
            mask_secret,
            keys: PublicKeys {
                from: me as u16,
                cipher,
                mask,
            },
            self_seed: crypto::random32(random),
            peers: BTreeMap::new(),
            held: BTreeMap::new(),
            phase: Phase::Keys,
        })
    }

    /// Step 1: the public keys to send.
    pub fn public_keys(&self) -> &PublicKeys {
        &self.keys
    }

    /// Step 2: given the neighbours' keys that reached the cloud, the shares of this
    /// device's secrets, one sealed message per neighbour.
    pub fn share(
        &mut self,
        neighbour_keys: &[PublicKeys],
        random: Random,
    ) -> Result<Vec<SealedShares>, SecAggError> {
        self.expect(Phase::Keys, "keys after the shares")?;
        for keys in neighbour_keys {
            let from = usize::from(keys.from);
            if !self.neighbours.contains(&from) || self.peers.insert(from, keys.clone()).is_some() {
                return Err(SecAggError::Unexpected(from));
            }
        }
        if self.peers.len() < self.settings.threshold {
            return Err(SecAggError::Request("fewer neighbours than the threshold"));
        }
        // Share points are positions plus one; every neighbour's is distinct.
        let xs: Vec<u8> = self.peers.keys().map(|&p| (p + 1) as u8).collect();
        let t = self.settings.threshold;
        let mask_key = shamir::split(self.mask_secret.as_bytes(), t, &xs, random);
        let self_mask = shamir::split(&self.self_seed, t, &xs, random);
        let mut out = Vec::with_capacity(xs.len());
        for ((peer, keys), (mask_key, self_mask)) in
            self.peers.iter().zip(mask_key.into_iter().zip(self_mask))
        {
            let bundle = ShareBundle {
                from: self.me as u16,
                to: *peer as u16,
                mask_key,
                self_mask,
            };
            let key = self.agreed(&keys.cipher, SHARE_LABEL, *peer)?;
            let plain =
                postcard::to_allocvec(&bundle).map_err(|_| SecAggError::Unexpected(*peer))?;
            out.push(SealedShares {
                from: self.me as u16,
                to: *peer as u16,
                sealed: crypto::seal(&key, self.me, *peer, self.settings.round, &plain),
            });
        }
        self.phase = Phase::Shared;
        Ok(out)
    }

    /// Step 3: given the shares neighbours sent it and the cloud's list of who shared,
    /// `update` masked (its fixed-point rounding from `rounding_seed`). Masks pair it with
    /// every neighbour that shared; a share missing from one of them is refused, since its
    /// mask would then not cancel in the sum.
    pub fn mask(
        &mut self,
        shares: &[SealedShares],
        sharers: &[u16],
        update: &[f32],
        rounding_seed: u64,
    ) -> Result<MaskedInput, SecAggError> {
        self.expect(Phase::Shared, "a masked input before the shares")?;
        if update.len() != self.settings.len {
            return Err(SecAggError::Length {
                expected: self.settings.len,
                got: update.len(),
            });
        }
        for sealed in shares {
            let from = usize::from(sealed.from);
            let Some(keys) = self.peers.get(&from) else {
                return Err(SecAggError::Unexpected(from));
            };
            if usize::from(sealed.to) != self.me || self.held.contains_key(&from) {
                return Err(SecAggError::Unexpected(from));
            }
            let key = self.agreed(&keys.cipher, SHARE_LABEL, from)?;
            let plain = crypto::open(&key, from, self.me, self.settings.round, &sealed.sealed)?;
            let bundle: ShareBundle =
                postcard::from_bytes(&plain).map_err(|_| SecAggError::Decrypt(from))?;
            if usize::from(bundle.from) != from || usize::from(bundle.to) != self.me {
                return Err(SecAggError::Decrypt(from));
            }
            self.held.insert(
                from,
                Held {
                    mask_key: bundle.mask_key,
                    self_mask: bundle.self_mask,
                },
            );
        }
        let shared = |p: &usize| sharers.contains(&(*p as u16));
        if self.peers.keys().filter(|p| shared(p)).count() != self.held.len()
            || !self.held.keys().all(shared)
        {
            return Err(SecAggError::Request(
                "the shares received are not those of the neighbours that shared",
            ));
        }
        let fixed = self.settings.fixed;
        let mut values = fixed.encode(update, rounding_seed);
        crypto::apply_mask(&mut values, &self.self_seed, false, fixed.mask());
        for &peer in self.held.keys() {
            let seed = self.agreed(&self.peers[&peer].mask, MASK_LABEL, peer)?;
            crypto::apply_mask(&mut values, &seed, peer < self.me, fixed.mask());
        }
        self.phase = Phase::Masked;
        Ok(MaskedInput {
            from: self.me as u16,
            values: fixed.pack(&values),
        })
    }

    /// Step 4: the shares the cloud needs, one per neighbour that shared: its self-mask
    /// seed's for a survivor, its mask key's for a dropped one. A device answers once,
    /// and refuses a request that names it dropped, names someone twice, leaves out a
    /// neighbour it holds shares of, or has fewer survivors than the threshold.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<Reveals, SecAggError> {
        self.expect(
            Phase::Masked,
            "an unmask request before the masked input, or twice",
        )?;
        self.phase = Phase::Done;
        let survivors: Vec<usize> = request.survivors.iter().map(|&s| usize::from(s)).collect();
        let dropped: Vec<usize> = request.dropped.iter().map(|&s| usize::from(s)).collect();
        if !survivors.contains(&self.me) || dropped.contains(&self.me) {
            return Err(SecAggError::Request("names this device dropped"));
        }
        if survivors.iter().any(|s| dropped.contains(s)) {
            return Err(SecAggError::Request(
                "names a participant both survived and dropped",
            ));
        }
        if survivors.len() < self.settings.threshold {
            return Err(SecAggError::Request("fewer survivors than the threshold"));
        }
        let mut reveals = Vec::with_capacity(self.held.len());
        for (&owner, held) in &self.held {
            let (secret, share) = if survivors.contains(&owner) {
                (Secret::SelfMask, &held.self_mask)
            } else if dropped.contains(&owner) {
                (Secret::MaskKey, &held.mask_key)
            } else {
                return Err(SecAggError::Request("leaves out a neighbour that shared"));
            };
            reveals.push(Reveal {
                owner: owner as u16,
                secret,
                share: share.clone(),
            });
        }
        Ok(Reveals {
            from: self.me as u16,
            reveals,
        })
    }

    fn expect(&self, phase: Phase, what: &'static str) -> Result<(), SecAggError> {
        if self.phase == phase {
            Ok(())
        } else {
            Err(SecAggError::Order(what))
        }
    }

    fn agreed(
        &self,
        public: &[u8; 32],
        label: &[u8],
        peer: usize,
    ) -> Result<[u8; 32], SecAggError> {
        let secret = if label == MASK_LABEL {
            &self.mask_secret
        } else {
            &self.cipher_secret
        };
        crypto::agreed(secret, public, label, self.settings.round, peer)
    }
}
