//! The cloud's side of a secure-aggregation round: it relays keys and sealed shares,
//! collects masked inputs, and opens their sum from the revealed shares.

use super::crypto::{self, MASK_LABEL};
use super::messages::{MaskedInput, PublicKeys, Reveals, SealedShares, Secret, UnmaskRequest};
use super::shamir::{self, Share};
use super::{SecAggError, Settings};
use std::collections::{BTreeMap, BTreeSet};
use x25519_dalek::{PublicKey, StaticSecret};

/// The cloud in one round.
pub struct Server {
    settings: Settings,
    graph: Vec<Vec<usize>>,
    keys: BTreeMap<usize, PublicKeys>,
    /// Sealed shares by recipient.
    mailbox: BTreeMap<usize, Vec<SealedShares>>,
    /// Who sent shares.
    sharers: BTreeSet<usize>,
    /// Masked inputs (ring elements) by sender.
    masked: BTreeMap<usize, Vec<u32>>,
    request: Option<UnmaskRequest>,
    /// Revealed shares by owner (of the one secret its fate calls for).
    revealed: BTreeMap<usize, Vec<Share>>,
    revealers: BTreeSet<usize>,
}

/// What a round opened to.
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    /// The sum of the survivors' updates (after fixed-point rounding).
    pub sum: Vec<f32>,
    /// The participants whose updates it sums.
    pub survivors: Vec<usize>,
}

impl Server {
    /// A round of `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            graph: settings.graph(),
            settings,
            keys: BTreeMap::new(),
            mailbox: BTreeMap::new(),
            sharers: BTreeSet::new(),
            masked: BTreeMap::new(),
            request: None,
            revealed: BTreeMap::new(),
            revealers: BTreeSet::new(),
        }
    }

    fn participant(&self, from: u16) -> Result<usize, SecAggError> {
        let from = usize::from(from);
        if from < self.settings.participants {
            Ok(from)
        } else {
            Err(SecAggError::Unexpected(from))
        }
    }

    /// Step 1: a device's public keys.
    pub fn receive_keys(&mut self, keys: PublicKeys) -> Result<(), SecAggError> {
        let from = self.participant(keys.from)?;
        if !self.sharers.is_empty() || self.keys.contains_key(&from) {
            return Err(SecAggError::Unexpected(from));
        }
        self.keys.insert(from, keys);
        Ok(())
    }

    /// The keys of `participant`'s neighbours that arrived (what it shares among).
    pub fn keys_for(&self, participant: usize) -> Vec<PublicKeys> {
        self.graph
            .get(participant)
            .into_iter()
            .flatten()
            .filter_map(|n| self.keys.get(n).cloned())
            .collect()
    }

    /// Step 2: a device's sealed shares, one per neighbour that sent keys.
    pub fn receive_shares(&mut self, shares: Vec<SealedShares>) -> Result<(), SecAggError> {
        let Some(first) = shares.first() else {
            return Err(SecAggError::Order("no shares"));
        };
        let from = self.participant(first.from)?;
        let expected: Vec<usize> = self
            .keys_for(from)
            .iter()
            .map(|k| usize::from(k.from))
            .collect();
        let mut to: Vec<usize> = shares.iter().map(|s| usize::from(s.to)).collect();
        to.sort_unstable();
        let consistent = shares.iter().all(|s| usize::from(s.from) == from) && to == expected;
        if !self.keys.contains_key(&from) || self.sharers.contains(&from) || !consistent {
            return Err(SecAggError::Unexpected(from));
        }
        self.sharers.insert(from);
        for share in shares {
            self.mailbox
                .entry(usize::from(share.to))
                .or_default()
                .push(share);
        }
        Ok(())
    }

    /// Who sent shares (what each device checks its mailbox against).
    pub fn sharers(&self) -> Vec<u16> {
        self.sharers.iter().map(|&p| p as u16).collect()
    }

    /// The sealed shares addressed to `participant`.
    pub fn shares_for(&self, participant: usize) -> Vec<SealedShares> {
        self.mailbox.get(&participant).cloned().unwrap_or_default()
    }

    /// Step 3: a device's masked input.
    pub fn receive_masked(&mut self, input: MaskedInput) -> Result<(), SecAggError> {
        let from = self.participant(input.from)?;
        if !self.sharers.contains(&from)
            || self.masked.contains_key(&from)
            || self.request.is_some()
        {
            return Err(SecAggError::Unexpected(from));
        }
        let values = self
            .settings
            .fixed
            .unpack(&input.values, self.settings.len)?;
        self.masked.insert(from, values);
        Ok(())
    }

    /// Step 4: closes the collection and names survivors and dropped devices.
    pub fn unmask_request(&mut self) -> Result<UnmaskRequest, SecAggError> {
        if self.request.is_some() {
            return Err(SecAggError::Order("a second unmask request"));
        }
        if self.masked.len() < self.settings.threshold {
            return Err(SecAggError::Request(
                "fewer masked inputs than the threshold",
            ));
        }
        let request = UnmaskRequest {
            survivors: self.masked.keys().map(|&p| p as u16).collect(),
            dropped: self
                .sharers
                .iter()
                .filter(|p| !self.masked.contains_key(p))
                .map(|&p| p as u16)
                .collect(),
        };
        self.request = Some(request.clone());
        Ok(request)
    }

    /// Step 4: a survivor's revealed shares.
    pub fn receive_reveals(&mut self, reveals: Reveals) -> Result<(), SecAggError> {
        let from = self.participant(reveals.from)?;
        if self.request.is_none()
            || !self.masked.contains_key(&from)
            || !self.revealers.insert(from)
        {
            return Err(SecAggError::Unexpected(from));
        }
        // The whole message is checked before any of it is kept: one share per owner, of
        // the secret its fate calls for, from a neighbour, at the revealer's point.
        let mut owners = BTreeSet::new();
        for reveal in &reveals.reveals {
            let owner = self.participant(reveal.owner)?;
            let survived = self.masked.contains_key(&owner);
            let fits = match reveal.secret {
                Secret::SelfMask => survived,
                Secret::MaskKey => !survived,
            };
            if !fits
                || !owners.insert(owner)
                || !self.graph[from].contains(&owner)
                || usize::from(reveal.share.x) != from + 1
            {
                self.revealers.remove(&from);
                return Err(SecAggError::Unexpected(from));
            }
        }
        for reveal in reveals.reveals {
            self.revealed
                .entry(usize::from(reveal.owner))
                .or_default()
                .push(reveal.share);
        }
        Ok(())
    }

    /// The secret `owner` shared, from the revealed shares (its self-mask seed if it
    /// survived, else its mask key: the reveals are checked to fit its fate).
    fn rebuild(&self, owner: usize) -> Result<[u8; 32], SecAggError> {
        let shares = self.revealed.get(&owner).map_or(&[][..], Vec::as_slice);
        let needed = self.settings.threshold;
        let too_few = SecAggError::TooFewShares {
            owner,
            got: shares.len(),
            needed,
        };
        let secret = shamir::combine(shares, needed).map_err(|_| too_few)?;
        secret.try_into().map_err(|_| SecAggError::WrongKey(owner))
    }

    /// The sum of the survivors' updates: their masked inputs, less each one's self mask
    /// and each dropped device's pairwise masks with them.
    pub fn open(&self) -> Result<Opened, SecAggError> {
        let Some(request) = &self.request else {
            return Err(SecAggError::Order("open before the unmask request"));
        };
        let fixed = self.settings.fixed;
        let mut sum = vec![0u32; self.settings.len];
        for values in self.masked.values() {
            for (s, v) in sum.iter_mut().zip(values) {
                *s = s.wrapping_add(*v) & fixed.mask();
            }
        }
        for &survivor in self.masked.keys() {
            let seed = self.rebuild(survivor)?;
            crypto::apply_mask(&mut sum, &seed, true, fixed.mask());
        }
        for &dropped in &request.dropped {
            let dropped = usize::from(dropped);
            let secret = StaticSecret::from(self.rebuild(dropped)?);
            if PublicKey::from(&secret).to_bytes() != self.keys[&dropped].mask {
                return Err(SecAggError::WrongKey(dropped));
            }
            for &peer in &self.graph[dropped] {
                if !self.masked.contains_key(&peer) {
                    continue;
                }
                let seed = crypto::agreed(
                    &secret,
                    &self.keys[&peer].mask,
                    MASK_LABEL,
                    self.settings.round,
                    peer,
                )?;
                // `peer` subtracted the stream if `dropped` came first, else added it.
                crypto::apply_mask(&mut sum, &seed, dropped > peer, fixed.mask());
            }
        }
        Ok(Opened {
            sum: fixed.decode(&sum),
            survivors: self.masked.keys().copied().collect(),
        })
    }
}
