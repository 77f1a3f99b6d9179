//! The messages and their kinds.

use serde::{Deserialize, Serialize};

/// A node's name: at most 64 bytes of UTF-8 (heapless, so control messages work no_std).
pub type NodeName = heapless::String<64>;
/// A software name and version, e.g. `tandem 0.1.0`: at most 32 bytes.
pub type SoftwareName = heapless::String<32>;

/// The kind of a frame's payload: the `kind` field of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Kind {
    /// [`Hello`]: a device introduces itself.
    Hello = 1,
    /// [`HelloAck`]: the cloud accepts the device.
    HelloAck = 2,
}

impl Kind {
    /// Every kind, for tests and tables.
    pub const ALL: [Kind; 2] = [Kind::Hello, Kind::HelloAck];

    /// The kind for a header value, if known.
    pub fn from_u16(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u16 == value)
    }

    /// The largest payload a frame of this kind may carry. Checked against the header
    /// before any payload byte is read, so a hostile length cannot cause an allocation.
    pub const fn max_payload(self) -> usize {
        match self {
            // Two u16 varints (<= 3 bytes each) + two length-prefixed strings.
            Kind::Hello | Kind::HelloAck => 256,
        }
    }
}

/// A message type with a fixed frame kind.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// The header kind of this message.
    const KIND: Kind;
}

/// The first frame a device sends on a new connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Oldest protocol version the device accepts.
    pub min_version: u16,
    /// Newest protocol version the device speaks.
    pub max_version: u16,
    /// The device's name (informational until mTLS identities arrive).
    pub node: NodeName,
    /// The device's software, e.g. `tandem 0.1.0`.
    pub software: SoftwareName,
}

/// The cloud's answer to [`Hello`]: the device may send application frames after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    /// The protocol version both sides will speak.
    pub version: u16,
    /// The cloud peer's name.
    pub peer: NodeName,
    /// The cloud's software, e.g. `tandem-cloud 0.1.0`.
    pub software: SoftwareName,
}

impl Message for Hello {
    const KIND: Kind = Kind::Hello;
}

impl Message for HelloAck {
    const KIND: Kind = Kind::HelloAck;
}

impl Hello {
    /// The highest version both `self` and this build speak, if any.
    pub fn negotiate(&self) -> Option<u16> {
        let high = self.max_version.min(super::PROTOCOL_VERSION);
        let low = self.min_version.max(super::MIN_PROTOCOL_VERSION);
        (low <= high).then_some(high)
    }
}
