//! A message plus the tensor bytes that follow it on the wire.

use crate::wire::{Activations, CutGradient, Join, Kind, RoundResult, RoundTask, Update};

/// What a session sends or receives: one message and, for tensor-carrying messages, its
/// encoded tensor (empty otherwise).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Envelope {
    /// Cut-layer activations and their encoded tensor (boxed: the message holds up to
    /// 256 sequence lengths and labels inline).
    Activations(Box<Activations>, Vec<u8>),
    /// The cut-layer gradient and its encoded tensor.
    CutGradient(CutGradient, Vec<u8>),
    /// A device offers itself for federated rounds.
    Join(Join),
    /// A round's task and its encoded model.
    RoundTask(RoundTask, Vec<u8>),
    /// A device's update and its encoded tensor.
    Update(Update, Vec<u8>),
    /// How a round ended.
    RoundResult(RoundResult),
}

impl Envelope {
    /// The wire kind of its message.
    pub fn kind(&self) -> Kind {
        match self {
            Envelope::Activations(..) => Kind::Activations,
            Envelope::CutGradient(..) => Kind::CutGradient,
            Envelope::Join(_) => Kind::Join,
            Envelope::RoundTask(..) => Kind::RoundTask,
            Envelope::Update(..) => Kind::Update,
            Envelope::RoundResult(_) => Kind::RoundResult,
        }
    }

    /// Bytes of its tensor (0 for a message without one).
    pub fn tensor_len(&self) -> usize {
        match self {
            Envelope::Activations(_, t)
            | Envelope::CutGradient(_, t)
            | Envelope::RoundTask(_, t)
            | Envelope::Update(_, t) => t.len(),
            Envelope::Join(_) | Envelope::RoundResult(_) => 0,
        }
    }
}
