//! Federated-learning messages. The model or update bytes of [`RoundTask`] and
//! [`Update`] follow the message in [`Kind::Chunk`](super::Kind::Chunk) frames.

use super::describe::{Capabilities, CodecDesc};
use super::message::{Kind, Message, NodeName};
use super::tensor::TensorMessage;
use serde::{Deserialize, Serialize};

/// A device offers itself for federated rounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The device.
    pub node: NodeName,
    /// Local training examples it holds (weights its updates).
    pub num_examples: u64,
    /// What it can do.
    pub capabilities: Capabilities,
}

/// Local training hyper-parameters for a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundConfig {
    /// Passes over the local data.
    pub local_epochs: u16,
    /// Examples per step.
    pub batch_size: u16,
    /// Learning rate.
    pub lr: f32,
    /// FedProx proximal weight (0 for FedAvg).
    pub proximal_mu: f32,
}

/// Whether a round ships the whole model or a delta from a model the device holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelPayload {
    /// All parameters.
    Full,
    /// Parameters minus the model the device received for round `base_round` (its
    /// "view", as the device decoded it); the device checks it holds that view by its
    /// FNV-1a 64 hash (of the view's little-endian f32 bytes) before adding the delta.
    Delta {
        /// The round whose model the delta is against.
        base_round: u64,
        /// FNV-1a 64 of that model's little-endian f32 bytes.
        base_fnv: u64,
    },
}

/// The cloud's task for one round, cloud -> device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundTask {
    /// Round number; updates for any other round are stale.
    pub round: u64,
    /// Milliseconds from now until the round closes.
    pub deadline_ms: u64,
    /// Local training settings.
    pub config: RoundConfig,
    /// What the payload holds.
    pub model: ModelPayload,
    /// How the payload (the model or its delta) is encoded: a stateless codec.
    pub model_codec: CodecDesc,
    /// How the device encodes its update for this round.
    pub update_codec: CodecDesc,
    /// Length of the payload that follows in chunks: the encoded model, then the
    /// update codec's shared factors.
    pub payload_len: u64,
    /// Bytes at the end of the payload that are the update codec's shared factors (ACP;
    /// 0 for other codecs).
    pub factors_len: u64,
}

/// A device's update for a round, device -> cloud. Counted once per (round, node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The round it answers.
    pub round: u64,
    /// The device that trained it.
    pub node: NodeName,
    /// Examples it was trained on (the aggregation weight).
    pub num_examples: u64,
    /// Mean training loss over the round's local steps (informational: never used to
    /// weigh the update).
    pub train_loss: f32,
    /// How the payload is encoded.
    pub codec: CodecDesc,
    /// Length of the encoded update that follows in chunks.
    pub payload_len: u64,
}

/// How a round ended, cloud -> device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundResult {
    /// The round.
    pub round: u64,
    /// Whether it committed (enough updates before the deadline) or aborted.
    pub committed: bool,
    /// Updates aggregated.
    pub accepted: u32,
    /// Updates refused (stale, duplicate, invalid, late).
    pub rejected: u32,
}

impl Message for Join {
    const KIND: Kind = Kind::Join;
}
impl Message for RoundTask {
    const KIND: Kind = Kind::RoundTask;
}
impl Message for Update {
    const KIND: Kind = Kind::Update;
}
impl Message for RoundResult {
    const KIND: Kind = Kind::RoundResult;
}

/// 512 MiB: a 128M-parameter f32 model, above anything a board trains.
const MODEL_MAX: u64 = 512 << 20;

impl TensorMessage for RoundTask {
    const MAX_TENSOR: u64 = MODEL_MAX;
    fn payload_len(&self) -> u64 {
        self.payload_len
    }
}
impl TensorMessage for Update {
    const MAX_TENSOR: u64 = MODEL_MAX;
    fn payload_len(&self) -> u64 {
        self.payload_len
    }
}
