//! Secure aggregation (Bonawitz et al. 2017, with SecAgg+'s sparse neighbourhoods, Bell
//! et al. 2020): the cloud learns the sum of the round's updates and nothing else about
//! any one of them, and the sum still opens when devices drop out mid-round.
//!
//! Sans-I/O: [`client::Client`] and [`server::Server`] are state machines over the
//! messages of [`messages`]; whoever carries them (the simulation, a transport) only
//! routes. One round, `n` participants at positions `0..n`:
//! 1. **Keys.** Each device makes two X25519 key pairs, one to encrypt the shares it
//!    sends, one to agree its masks, and sends both public keys.
//! 2. **Shares.** Each device picks a self-mask seed `b`, and splits `b` and its mask
//!    secret key with Shamir (threshold `t`) among its neighbours (all others, or `k` of
//!    them on a seeded ring graph: SecAgg+), each share encrypted (ChaCha20-Poly1305) to
//!    its recipient under their agreed key. The cloud routes ciphertexts it cannot read.
//! 3. **Masked input.** Each device sends its update in fixed point ([`fixed_point`]) plus
//!    `PRG(b)` plus, for each neighbour `v`, `+PRG(s_uv)` if `u < v` else `-PRG(s_uv)`,
//!    where `s_uv` is agreed by X25519: pairs cancel in the sum, modulo `2^ring_bits`.
//! 4. **Unmask.** The cloud names who sent a masked input (survivors) and who did not
//!    (dropped). Each device reveals, per neighbour, a share of `b` for a survivor or of
//!    the mask key for a dropped one, never both for the same neighbour, and answers one
//!    request only. With `t` shares per participant the cloud removes the survivors'
//!    self masks and the dropped devices' pairwise masks, and reads the sum.
//!
//! What the cloud sees of one device is its masked input, uniform in the ring whatever
//! the update (tested), and, from each neighbour, a share of at most one of its two
//! secrets. The threshold is a strict majority of the neighbourhood (`t > k / 2`,
//! refused otherwise), so the two secrets of one device cannot both reach `t` shares
//! even when the cloud tells half its neighbours "it survived" and the other half "it
//! dropped": with `t <= k / 2` that lie would rebuild both and open the device's update
//! alone.
//!
//! The threat model is an honest-but-curious cloud that routes faithfully, plus that one
//! lie, which the majority threshold defeats. What the cloud learns: the sum of the
//! survivors' updates, who survived, and each update's size. What it cannot learn: any
//! one update, nor a sum over fewer devices than the survivors, unless `t` neighbours of
//! a device collude with it. Not built: the full protocol's signatures and consistency
//! round (Bonawitz et al. 2017, section 4), which an actively malicious cloud (one that
//! forges messages or keys, or equivocates over several requests) needs.

pub mod client;
mod crypto;
pub mod fixed_point;
pub mod messages;
pub mod round;
pub mod server;
pub mod shamir;
#[cfg(test)]
mod tests;

use crate::rng::SplitMix64;
pub use crypto::Random;
pub use fixed_point::FixedPoint;

/// Participants in one round at most (share points are one byte).
pub const MAX_PARTICIPANTS: usize = 255;

/// The settings every participant and the cloud agree on for one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// The round (bound into every derived key).
    pub round: u64,
    /// Participants (2..=255).
    pub participants: usize,
    /// Neighbours of each participant (even, or `participants - 1` for all).
    pub neighbours: usize,
    /// Shares of a participant's secrets needed to rebuild them.
    pub threshold: usize,
    /// The fixed-point encoding of the updates.
    pub fixed: FixedPoint,
    /// Values in an update.
    pub len: usize,
}

impl Settings {
    /// Settings for `participants`, each with `neighbours` neighbours (clamped to all),
    /// `threshold` of whom (a strict majority: `neighbours / 2 < threshold <=
    /// neighbours`) rebuild a participant's secrets, updates of `len` values clipped to
    /// `clip` at `value_bits` bits.
    ///
    /// The threshold trades the two guarantees: a round opens while every participant
    /// keeps `threshold` neighbours to the end, and fewer than `threshold` colluding
    /// neighbours learn nothing of a secret. It may not go down to half the neighbours
    /// (see the module's docs: the cloud could then rebuild both secrets of one device).
    /// The least majority (`neighbours / 2 + 1`) tolerates a little under half of a
    /// neighbourhood dropping; more drop-outs over a sparse graph need more neighbours
    /// (BENCHMARKS.md has the settings measured).
    pub fn new(
        round: u64,
        participants: usize,
        neighbours: usize,
        threshold: usize,
        len: usize,
        clip: f32,
        value_bits: u8,
    ) -> Result<Self, SecAggError> {
        if !(2..=MAX_PARTICIPANTS).contains(&participants) {
            return Err(SecAggError::Participants(participants));
        }
        let neighbours = neighbours.min(participants - 1);
        let all = neighbours == participants - 1;
        if (!all && (neighbours < 2 || !neighbours.is_multiple_of(2)))
            || !(neighbours / 2 + 1..=neighbours).contains(&threshold)
        {
            return Err(SecAggError::Neighbours {
                neighbours,
                threshold,
                participants,
            });
        }
        Ok(Self {
            round,
            participants,
            neighbours,
            threshold,
            fixed: FixedPoint::new(clip, value_bits, participants)?,
            len,
        })
    }

    /// The neighbours of every participant: all others, or the `k / 2` on each side on a
    /// ring laid out by a shuffle from the graph seed (a Harary graph, as SecAgg+). The
    /// relation is symmetric; each list is sorted.
    pub fn graph(&self) -> Vec<Vec<usize>> {
        let n = self.participants;
        if self.neighbours == n - 1 {
            return (0..n)
                .map(|i| (0..n).filter(|&j| j != i).collect())
                .collect();
        }
        let mut ring: Vec<usize> = (0..n).collect();
        // The graph is public: seeded by the round.
        SplitMix64::new(self.round ^ 0x5ec_a66).shuffle(&mut ring);
        let mut place = vec![0; n];
        for (p, &i) in ring.iter().enumerate() {
            place[i] = p;
        }
        let half = self.neighbours / 2;
        (0..n)
            .map(|i| {
                let mut near: Vec<usize> = (1..=half)
                    .flat_map(|d| [ring[(place[i] + d) % n], ring[(place[i] + n - d) % n]])
                    .collect();
                near.sort_unstable();
                near.dedup();
                near
            })
            .collect()
    }
}

/// Why a secure-aggregation step failed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum SecAggError {
    /// Not 2..=255 participants.
    #[error("{0} participants: secure aggregation takes 2..={MAX_PARTICIPANTS}")]
    Participants(usize),
    /// A neighbourhood size the graph cannot have.
    #[error(
        "{neighbours} neighbours (threshold {threshold}) of {participants} participants: expected an even number >= 2, or all, and a threshold over half the neighbours and at most all of them"
    )]
    Neighbours {
        /// Asked for.
        neighbours: usize,
        /// Shares needed.
        threshold: usize,
        /// Participants.
        participants: usize,
    },
    /// A fixed-point encoding that cannot hold the sum.
    #[error(
        "clip {clip} at {value_bits} bits for {participants} participants: expected clip > 0 and value bits + log2(participants) <= 32"
    )]
    Encoding {
        /// The clipping bound.
        clip: f32,
        /// Bits per value.
        value_bits: u8,
        /// Participants.
        participants: usize,
    },
    /// A message of the wrong size.
    #[error("{got} bytes where {expected} were expected")]
    Length {
        /// Expected bytes.
        expected: usize,
        /// Received bytes.
        got: usize,
    },
    /// A message from or about someone who is not a neighbour, or a repeated one.
    #[error("participant {0} is not expected here")]
    Unexpected(usize),
    /// A message out of the protocol's order.
    #[error("out of order: {0}")]
    Order(&'static str),
    /// A share that does not decrypt or does not match its envelope.
    #[error("the share from participant {0} does not decrypt")]
    Decrypt(usize),
    /// An unmask request that would reveal both secrets of someone, or leave too few.
    #[error("unmask request refused: {0}")]
    Request(&'static str),
    /// Too few shares to rebuild a participant's secret.
    #[error("participant {owner}: {got} shares of {needed} needed")]
    TooFewShares {
        /// Whose secret.
        owner: usize,
        /// Shares received.
        got: usize,
        /// The threshold.
        needed: usize,
    },
    /// A rebuilt mask key that is not the one its owner published.
    #[error("participant {0}: the rebuilt mask key is not the published one")]
    WrongKey(usize),
}
