//! The device side of a federated round, without I/O: from a round's task and model bytes
//! to the update to send. The transport (`DeviceLink::run_round`) carries the messages;
//! this decides what is in them.

use super::task::{LocalConfig, Task, TaskError};
use super::update::{self, UpdateEncoder, UpdateError};
use crate::wire::{CodecDesc, ModelPayload, NodeName, RoundTask, Update};

/// Local SGD momentum (the round's settings carry no momentum; Flower's baselines use 0.9).
pub const MOMENTUM: f32 = 0.9;

/// Why a device did not send an update for a round.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ClientError {
    /// The model in the task is not this task's model.
    #[error("the round's model: {0}")]
    Model(UpdateError),
    /// Only full models are understood so far.
    #[error("the round sent a model delta; this device needs full models")]
    DeltaModel,
    /// Local training failed.
    #[error(transparent)]
    Train(#[from] TaskError),
    /// The update could not be encoded (e.g. a non-finite value: never sent).
    #[error("the update: {0}")]
    Encode(UpdateError),
}

/// A device taking part in federated rounds: its task, its data and its codec state
/// (error-feedback residuals, PowerSGD's `Q`), kept across rounds.
pub struct FlClient<T: Task> {
    task: T,
    data: T::Data,
    node: NodeName,
    encoder: Option<UpdateEncoder>,
    seed: u64,
}

/// What one round's local training gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Trained {
    /// The Update message.
    pub update: Update,
    /// Its encoded payload.
    pub payload: Vec<u8>,
    /// Mean training loss.
    pub loss: f32,
    /// Optimiser steps.
    pub steps: u64,
}

impl<T: Task> FlClient<T> {
    /// A client `node` training `task` on `data`; `seed` varies its batch order.
    pub fn new(task: T, data: T::Data, node: NodeName, seed: u64) -> Self {
        Self {
            task,
            data,
            node,
            encoder: None,
            seed,
        }
    }

    /// Examples held.
    pub fn examples(&self) -> u64 {
        self.task.examples(&self.data)
    }

    /// The task.
    pub fn task(&self) -> &T {
        &self.task
    }

    /// Trains on `round`'s model and encodes `local - global` with the round's codec.
    pub fn train(&mut self, round: &RoundTask, model: &[u8]) -> Result<Trained, ClientError> {
        if round.model != ModelPayload::Full {
            return Err(ClientError::DeltaModel);
        }
        let layout = self.task.layout().clone();
        let global =
            update::decode(CodecDesc::Identity, &layout, model).map_err(ClientError::Model)?;
        let local = LocalConfig {
            epochs: round.config.local_epochs,
            batch: round.config.batch_size,
            lr: round.config.lr,
            momentum: MOMENTUM,
            proximal_mu: round.config.proximal_mu,
        };
        let seed = self
            .seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(round.round);
        let result = self.task.train(&global, &self.data, &local, seed)?;
        let delta: Vec<f32> = result
            .weights
            .iter()
            .zip(&global)
            .map(|(w, g)| w - g)
            .collect();
        let encoder = match &mut self.encoder {
            Some(e) if e.desc() == round.codec => e,
            slot => {
                slot.insert(UpdateEncoder::new(layout, round.codec).map_err(ClientError::Encode)?)
            }
        };
        let payload = encoder.encode(&delta).map_err(ClientError::Encode)?;
        Ok(Trained {
            update: Update {
                round: round.round,
                node: self.node.clone(),
                num_examples: result.examples,
                codec: round.codec,
                payload_len: payload.len() as u64,
            },
            payload,
            loss: result.loss,
            steps: result.steps,
        })
    }
}
