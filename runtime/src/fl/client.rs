//! The device side of a federated round, without I/O: from a round's task and model bytes
//! to the update to send. The transport (`DeviceLink::run_round`) carries the messages;
//! this decides what is in them.
//!
//! With a checkpoint file, every trained round is committed to disk (the update made and
//! the codec state after it) before the update is handed over for sending. A device
//! killed and restarted therefore resends the same bytes if the cloud asks for that
//! round again (the cloud counts a node once per round), and continues with the next
//! round from the same error-feedback residuals, PowerSGD `Q` and model view (the base
//! of the next downlink delta): nothing trained twice, nothing lost.

use super::acp::{AcpError, SharedFactors};
use super::byzantine::Attack;
use super::downlink::{self, DownlinkError, ModelView};
use super::task::{LocalConfig, Task, TaskError};
use super::update::{UpdateEncoder, UpdateError};
use crate::codec::EncoderMemory;
use crate::fnv::fnv1a64;
use crate::sealed::{self, SealedError};
use crate::wire::{CodecDesc, NodeName, RoundTask, Update};
use std::path::PathBuf;

/// Local SGD momentum (the round's settings carry no momentum; Flower's baselines use 0.9).
pub const MOMENTUM: f32 = 0.9;

/// Why a device did not send an update for a round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The model in the task is not this task's model, or a delta against a model this
    /// device does not hold (the cloud then sends the full model next time).
    #[error("the round's model: {0}")]
    Model(#[from] DownlinkError),
    /// The round's shared factors (ACP) do not fit this task's model.
    #[error("the round's shared factors: {0}")]
    Factors(#[from] AcpError),
    /// Local training failed.
    #[error(transparent)]
    Train(#[from] TaskError),
    /// The update could not be encoded (e.g. a non-finite value: never sent).
    #[error("the update: {0}")]
    Encode(UpdateError),
    /// The checkpoint could not be read or written (nothing is sent unchecked).
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] SealedError),
    /// The checkpoint belongs to another task, model or device.
    #[error(
        "checkpoint {path}: made by {found}, not by this device's {expected}; pass another --checkpoint"
    )]
    ForeignCheckpoint {
        /// The file.
        path: PathBuf,
        /// `task/node` of this device.
        expected: String,
        /// `task/node` in the file.
        found: String,
    },
}

/// The checkpoint file's tag.
const MAGIC: &[u8; 8] = b"TNDMFLC2";

/// What a device commits after each round.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    task: String,
    layout: u64,
    node: String,
    trained: Trained,
    /// FNV-1a 64 of the round's model bytes: the same round number of another run (a
    /// cloud started on a fresh state) is a different round.
    model: u64,
    codec: CodecDesc,
    memory: Vec<EncoderMemory>,
    /// The model trained on: the base of the next downlink delta.
    view: ModelView,
}

/// A device taking part in federated rounds: its task, its data and its codec state
/// (error-feedback residuals, PowerSGD's `Q`), kept across rounds.
pub struct FlClient<T: Task> {
    task: T,
    data: T::Data,
    node: NodeName,
    encoder: Option<UpdateEncoder>,
    seed: u64,
    checkpoint: Option<PathBuf>,
    /// The last round trained and the hash of its model payload.
    last: Option<(Trained, u64)>,
    /// The model the last round trained on, as decoded here.
    view: Option<ModelView>,
    /// A test mode: how this device corrupts its deltas, and the example count it
    /// claims instead of its own.
    hostile: Option<(Attack, Option<u64>)>,
}

/// What one round's local training gave.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
            checkpoint: None,
            last: None,
            view: None,
            hostile: None,
        }
    }

    /// A hostile device, to exercise a cloud's defences: it trains as an honest one
    /// would, then sends its delta corrupted by `attack` and claims `examples` (its own
    /// count when `None`).
    pub fn with_attack(mut self, attack: Attack, examples: Option<u64>) -> Self {
        self.hostile = Some((attack, examples));
        self
    }

    /// Commits every trained round to `path`, continuing from what is there.
    pub fn with_checkpoint(mut self, path: PathBuf) -> Result<Self, ClientError> {
        // An update, the codec state and the view are a few times the model at most.
        let max_bytes = 16 * 4 * self.task.layout().len() as u64 + (1 << 20);
        if let Some(saved) = sealed::load::<Checkpoint>(&path, MAGIC, max_bytes)? {
            let expected = format!("{}/{}", self.task.name(), self.node);
            let found = format!("{}/{}", saved.task, saved.node);
            if found != expected || saved.layout != self.task.layout().fingerprint() {
                return Err(ClientError::ForeignCheckpoint {
                    path,
                    expected,
                    found,
                });
            }
            let encoder =
                UpdateEncoder::restore(self.task.layout().clone(), saved.codec, saved.memory)
                    .map_err(ClientError::Encode)?;
            self.encoder = Some(encoder);
            self.last = Some((saved.trained, saved.model));
            self.view = Some(saved.view);
        }
        self.checkpoint = Some(path);
        Ok(self)
    }

    /// The last round trained (from this run or the checkpoint).
    pub fn last_round(&self) -> Option<u64> {
        self.last.as_ref().map(|(t, _)| t.update.round)
    }

    /// Examples held (a hostile device: the count it claims), as its Join declares.
    pub fn examples(&self) -> u64 {
        match self.hostile {
            Some((_, Some(claimed))) => claimed,
            _ => self.task.examples(&self.data),
        }
    }

    /// The task.
    pub fn task(&self) -> &T {
        &self.task
    }

    /// Whether this device already trained `round` on this `model`: [`Self::train`]
    /// then returns the same update again, untrained.
    pub fn trained_on(&self, round: &RoundTask, model: &[u8]) -> bool {
        self.trained(round.round, fnv1a64(model)).is_some()
    }

    /// The update of round `round` trained on the model hashed `model_hash`, if this
    /// device made it.
    fn trained(&self, round: u64, model_hash: u64) -> Option<&Trained> {
        self.last
            .as_ref()
            .filter(|(last, hash)| last.update.round == round && *hash == model_hash)
            .map(|(last, _)| last)
    }

    /// Trains on `round`'s model and encodes `local - global` with the round's codec.
    pub fn train(&mut self, round: &RoundTask, model: &[u8]) -> Result<Trained, ClientError> {
        let model_hash = fnv1a64(model);
        if let Some(last) = self.trained(round.round, model_hash) {
            // Asked again (a restarted cloud, or a lost update): the same bytes, not a
            // retrain.
            return Ok(last.clone());
        }
        if self
            .last
            .as_ref()
            .is_some_and(|(last, _)| last.update.round >= round.round)
        {
            // The same or an earlier round with another model: the cloud started a new
            // run, and the codec state of the old one does not belong to it.
            self.encoder = None;
            self.last = None;
        }
        let layout = self.task.layout().clone();
        let factors_len = usize::try_from(round.factors_len).ok();
        let Some(split) = factors_len.and_then(|f| model.len().checked_sub(f)) else {
            return Err(AcpError::Bytes("longer than the round's payload").into());
        };
        let (model, factors) = model.split_at(split);
        let shared = match round.update_codec {
            CodecDesc::Acp { .. } => Some(SharedFactors::from_bytes(
                &layout,
                round.update_codec,
                factors,
            )?),
            _ if factors.is_empty() => None,
            other => return Err(AcpError::NotAcp(other).into()),
        };
        let view = downlink::receive(
            &layout,
            round.model_codec,
            round.model,
            model,
            self.view.as_ref(),
            round.round,
        )?;
        let global = &view.weights;
        let local = LocalConfig::from_round(&round.config, MOMENTUM);
        let seed = self
            .seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(round.round);
        let result = self.task.train(global, &self.data, &local, seed)?;
        let mut delta: Vec<f32> = result
            .weights
            .iter()
            .zip(global)
            .map(|(w, g)| w - g)
            .collect();
        let mut examples = result.examples;
        if let Some((attack, claimed)) = &self.hostile {
            attack.corrupt(&mut delta, seed);
            examples = claimed.unwrap_or(examples);
        }
        // Encoded on a copy: the codec state moves on only once the round is committed.
        let mut encoder = match &self.encoder {
            Some(e) if e.desc() == round.update_codec => e.clone(),
            _ => UpdateEncoder::new(layout, round.update_codec).map_err(ClientError::Encode)?,
        };
        let payload = encoder
            .encode_shared(&delta, shared.as_ref())
            .map_err(ClientError::Encode)?;
        let trained = Trained {
            update: Update {
                round: round.round,
                node: self.node.clone(),
                num_examples: examples,
                train_loss: result.loss,
                codec: round.update_codec,
                payload_len: payload.len() as u64,
            },
            payload,
            loss: result.loss,
            steps: result.steps,
        };
        if let Some(path) = &self.checkpoint {
            let checkpoint = Checkpoint {
                task: self.task.name().to_string(),
                layout: self.task.layout().fingerprint(),
                node: self.node.to_string(),
                trained: trained.clone(),
                model: model_hash,
                codec: round.update_codec,
                memory: encoder.memory(),
                view: view.clone(),
            };
            sealed::save(path, MAGIC, &checkpoint)?;
        }
        self.encoder = Some(encoder);
        self.last = Some((trained.clone(), model_hash));
        self.view = Some(view);
        Ok(trained)
    }
}
