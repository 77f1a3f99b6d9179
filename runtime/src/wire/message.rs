//! Frame kinds, the [`Message`] trait and the connection-level messages.

use super::describe::{Capabilities, CodecDesc, ModelDesc, RunPlan};
use serde::{Deserialize, Serialize};

/// A node's name: at most 64 bytes of UTF-8 (heapless, so control messages work no_std).
pub type NodeName = heapless::String<64>;
/// A software name and version, e.g. `tandem 0.1.0`: at most 32 bytes.
pub type SoftwareName = heapless::String<32>;
/// A close reason for people: at most 128 bytes.
pub type Reason = heapless::String<128>;

/// The kind of a frame's payload: the `kind` field of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Kind {
    /// [`Hello`]: a device introduces itself.
    Hello = 1,
    /// [`HelloAck`]: the cloud accepts the device.
    HelloAck = 2,
    /// [`Close`]: either side ends the session, with a reason.
    Close = 3,
    /// [`Activations`](super::Activations): cut-layer activations, device -> cloud.
    Activations = 16,
    /// [`CutGradient`](super::CutGradient): gradient at the cut, cloud -> device.
    CutGradient = 17,
    /// [`Eval`](super::Eval): an evaluation pass, device -> cloud.
    Eval = 18,
    /// [`Metrics`](super::Metrics): loss and accuracy, cloud -> device.
    Metrics = 19,
    /// [`Join`](super::Join): a device offers itself for federated rounds.
    Join = 32,
    /// [`RoundTask`](super::RoundTask): the cloud's task for one round.
    RoundTask = 33,
    /// [`Update`](super::Update): a device's model update for a round.
    Update = 34,
    /// [`RoundResult`](super::RoundResult): how a round ended.
    RoundResult = 35,
    /// Raw bytes continuing the tensor payload of the preceding message.
    Chunk = 64,
}

impl Kind {
    /// Every kind, for tests and tables.
    pub const ALL: [Kind; 12] = [
        Kind::Hello,
        Kind::HelloAck,
        Kind::Close,
        Kind::Activations,
        Kind::CutGradient,
        Kind::Eval,
        Kind::Metrics,
        Kind::Join,
        Kind::RoundTask,
        Kind::Update,
        Kind::RoundResult,
        Kind::Chunk,
    ];

    /// The kind for a header value, if known.
    pub fn from_u16(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u16 == value)
    }

    /// The largest payload one frame of this kind may carry. Checked against the header
    /// before any payload byte is read, so a hostile length cannot cause an allocation.
    /// Tensor bytes are not part of it: they follow in [`Kind::Chunk`] frames under the
    /// message's own total cap.
    pub const fn max_payload(self) -> usize {
        match self {
            // Strings and up to 8 codec descriptions (<= 6 bytes each): <= 200 bytes.
            Kind::Hello => 512,
            Kind::HelloAck | Kind::Close | Kind::Join => 256,
            // Up to 256 sequence lengths (<= 3 bytes) and labels (<= 5 bytes).
            Kind::Activations => 4096,
            Kind::CutGradient
            | Kind::Eval
            | Kind::Metrics
            | Kind::RoundTask
            | Kind::Update
            | Kind::RoundResult => 256,
            Kind::Chunk => super::CHUNK_MAX,
        }
    }
}

/// A postcard message with a fixed frame kind.
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
    /// The device's name (its certificate's, once mTLS identities are in place).
    pub node: NodeName,
    /// The device's software, e.g. `tandem 0.1.0`.
    pub software: SoftwareName,
    /// What the device wants to do.
    pub capabilities: Capabilities,
    /// The model it runs.
    pub model: ModelDesc,
    /// The codecs it can decode, most preferred first.
    pub codecs: heapless::Vec<CodecDesc, 8>,
    /// The training run it plans (split; default for other jobs).
    pub plan: RunPlan,
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
    /// The features both sides have.
    pub capabilities: Capabilities,
    /// Identifies this session, so a reconnecting device can resume it.
    pub session: u64,
}

/// Ends a session on purpose, with a typed code and a reason for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    /// A [`CloseCode`](super::CloseCode) value.
    pub code: u32,
    /// Why, for logs.
    pub reason: Reason,
}

impl Message for Hello {
    const KIND: Kind = Kind::Hello;
}

impl Message for HelloAck {
    const KIND: Kind = Kind::HelloAck;
}

impl Message for Close {
    const KIND: Kind = Kind::Close;
}

impl Hello {
    /// A connectivity probe from `node`: this build's version range, no job, no model,
    /// no codecs.
    pub fn probe(node: NodeName, software: SoftwareName) -> Self {
        Self {
            min_version: super::MIN_PROTOCOL_VERSION,
            max_version: super::PROTOCOL_VERSION,
            node,
            software,
            capabilities: Capabilities::NONE,
            model: ModelDesc {
                name: heapless::String::new(),
                cut: 0,
                hidden: 0,
            },
            codecs: heapless::Vec::new(),
            plan: RunPlan::default(),
        }
    }

    /// The highest version both `self` and this build speak, if any.
    pub fn negotiate(&self) -> Option<u16> {
        let high = self.max_version.min(super::PROTOCOL_VERSION);
        let low = self.min_version.max(super::MIN_PROTOCOL_VERSION);
        (low <= high).then_some(high)
    }
}
