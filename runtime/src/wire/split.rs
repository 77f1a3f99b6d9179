//! Split fine-tuning messages. The tensor bytes of [`Activations`] and [`CutGradient`]
//! follow the message in [`Kind::Chunk`](super::Kind::Chunk) frames.

use super::describe::CodecDesc;
use super::message::{Kind, Message};
use super::tensor::TensorMessage;
use serde::{Deserialize, Serialize};

/// The most sequences in one batch.
pub const MAX_BATCH: usize = 256;

/// Cut-layer activations of one batch, device -> cloud. `H` has `batch * seq` rows of
/// `hidden` columns (right-padded sequences); `seq_lens` is the attention mask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activations {
    /// Training step (or evaluation batch) this belongs to; resent steps reuse it.
    pub step: u64,
    /// False for an evaluation batch: no gradient comes back.
    pub train: bool,
    /// Sequences in the batch.
    pub batch: u16,
    /// Padded sequence length.
    pub seq: u16,
    /// Width of each row.
    pub hidden: u16,
    /// Unpadded length of each sequence (`batch` entries, each <= `seq`).
    pub seq_lens: heapless::Vec<u16, MAX_BATCH>,
    /// Class label of each sequence (`batch` entries; empty for inference).
    pub labels: heapless::Vec<u32, MAX_BATCH>,
    /// The training-set id of each sequence's review (`batch` entries), asking the cloud
    /// to keep its rows (a frozen bottom's code of a review is the same every epoch);
    /// empty: no caching.
    pub reviews: heapless::Vec<u32, MAX_BATCH>,
    /// No tensor follows (`payload_len` 0): each sequence's rows are the ones the cloud
    /// kept under its review id.
    pub cached: bool,
    /// How the tensor bytes are encoded.
    pub codec: CodecDesc,
    /// Length of the encoded tensor that follows in chunks.
    pub payload_len: u64,
}

/// The gradient of the loss at the cut for one step, cloud -> device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutGradient {
    /// The step of the [`Activations`] it answers.
    pub step: u64,
    /// The batch loss the cloud computed.
    pub loss: f32,
    /// The cloud keeps the batch's rows under their review ids: later batches of only
    /// these reviews may be sent `cached`.
    pub kept: bool,
    /// How the tensor bytes are encoded.
    pub codec: CodecDesc,
    /// Length of the encoded tensor that follows in chunks.
    pub payload_len: u64,
}

/// Announces an evaluation pass of `batches` activation batches (sent with
/// `train: false`); the cloud answers with [`Metrics`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eval {
    /// The training step the evaluation belongs to.
    pub step: u64,
    /// Batches that follow.
    pub batches: u32,
}

/// Loss and accuracy over an evaluation pass (or recent training steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The step they describe.
    pub step: u64,
    /// Mean loss.
    pub loss: f32,
    /// Correct predictions.
    pub correct: u32,
    /// Predictions made.
    pub total: u32,
}

impl Message for Activations {
    const KIND: Kind = Kind::Activations;
}
impl Message for CutGradient {
    const KIND: Kind = Kind::CutGradient;
}
impl Message for Eval {
    const KIND: Kind = Kind::Eval;
}
impl Message for Metrics {
    const KIND: Kind = Kind::Metrics;
}

/// 64 MiB: a 4096 x 4096 f32 tensor, far above a board's real batches.
const SPLIT_TENSOR_MAX: u64 = 64 << 20;

impl TensorMessage for Activations {
    const MAX_TENSOR: u64 = SPLIT_TENSOR_MAX;
    fn payload_len(&self) -> u64 {
        self.payload_len
    }
}
impl TensorMessage for CutGradient {
    const MAX_TENSOR: u64 = SPLIT_TENSOR_MAX;
    fn payload_len(&self) -> u64 {
        self.payload_len
    }
}
