//! What participants and the cloud send one another in a round (postcard on the wire;
//! [`wire_len`] counts the bytes).

use super::shamir::Share;
use serde::{Deserialize, Serialize};

/// Step 1, device to cloud (and cloud to the device's neighbours): its public keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeys {
    /// The sender's position.
    pub from: u16,
    /// X25519 key the shares sent to it are encrypted under.
    pub cipher: [u8; 32],
    /// X25519 key its pairwise masks are agreed with.
    pub mask: [u8; 32],
}

/// Step 2, device to cloud to neighbour: the sender's two shares for the recipient,
/// encrypted to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShares {
    /// The sender.
    pub from: u16,
    /// The recipient.
    pub to: u16,
    /// ChaCha20-Poly1305 of [`ShareBundle`].
    pub sealed: Vec<u8>,
}

/// The plaintext inside [`SealedShares`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ShareBundle {
    pub from: u16,
    pub to: u16,
    /// A share of the sender's mask secret key.
    pub mask_key: Share,
    /// A share of the sender's self-mask seed.
    pub self_mask: Share,
}

/// Step 3, device to cloud: the masked update, ring elements packed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// The sender.
    pub from: u16,
    /// [`super::FixedPoint::pack`]ed values.
    pub values: Vec<u8>,
}

/// Step 4, cloud to survivors: who sent a masked input and who did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    /// Sent a masked input.
    pub survivors: Vec<u16>,
    /// Shared their secrets, sent no masked input.
    pub dropped: Vec<u16>,
}

/// Which secret of its owner a revealed share belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Secret {
    /// A survivor's self-mask seed.
    SelfMask,
    /// A dropped participant's mask secret key.
    MaskKey,
}

/// One revealed share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    /// Whose secret.
    pub owner: u16,
    /// Which one.
    pub secret: Secret,
    /// The share the revealer held.
    pub share: Share,
}

/// Step 4, device to cloud: its answer to the unmask request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveals {
    /// The revealer.
    pub from: u16,
    /// One share per neighbour that shared with it.
    pub reveals: Vec<Reveal>,
}

/// Bytes of `message` on the wire.
pub fn wire_len<T: Serialize>(message: &T) -> usize {
    postcard::to_allocvec(message).map_or(0, |b| b.len())
}
