//! What a federated task provides: a model with a fixed [`Layout`], local training from a
//! global model, and evaluation. The round, codec, validation and strategy code never
//! look inside a task, so a second one (MiniLM + LoRA on reviews partitioned by movie)
//! plugs in beside [`super::fmnist`] without touching them.

use super::Layout;
use crate::rng::SplitMix64;
use crate::wire::RoundConfig;

/// Local training settings of one round (sent by the cloud in the round's task).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalConfig {
    /// Passes over the local data.
    pub epochs: u16,
    /// Examples per step.
    pub batch: u16,
    /// SGD learning rate.
    pub lr: f32,
    /// SGD momentum (0.9 in Flower's baselines).
    pub momentum: f32,
    /// FedProx's proximal weight; 0 for plain local SGD.
    pub proximal_mu: f32,
    /// Stop after this many optimiser steps, before the epochs end (a device's plan
    /// under a round deadline); None for the full work. Not sent on the wire.
    pub max_steps: Option<u64>,
}

impl LocalConfig {
    /// The settings a round's task carries to its devices (momentum is the device's).
    pub fn round_config(&self) -> RoundConfig {
        RoundConfig {
            local_epochs: self.epochs,
            batch_size: self.batch,
            lr: self.lr,
            proximal_mu: self.proximal_mu,
        }
    }

    /// A device's settings for a round's `config`, with its own `momentum`.
    pub fn from_round(config: &RoundConfig, momentum: f32) -> Self {
        Self {
            epochs: config.local_epochs,
            batch: config.batch_size,
            lr: config.lr,
            momentum,
            proximal_mu: config.proximal_mu,
            max_steps: None,
        }
    }

    /// Refuses settings no device can train with, so a cloud says so at start-up rather
    /// than every device refusing every round.
    pub fn check(&self) -> Result<(), TaskError> {
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if self.epochs == 0 || self.batch == 0 || !positive(self.lr) {
            return Err(TaskError::Config(format!(
                "local training needs epochs, batch and lr above 0 (epochs {}, batch {}, lr {})",
                self.epochs, self.batch, self.lr
            )));
        }
        let mu_ok = self.proximal_mu.is_finite() && self.proximal_mu >= 0.0;
        if !((0.0..1.0).contains(&self.momentum) && mu_ok) {
            return Err(TaskError::Config(format!(
                "momentum must be in [0, 1) and the proximal weight finite and >= 0 (momentum {}, mu {})",
                self.momentum, self.proximal_mu
            )));
        }
        Ok(())
    }
}

/// What local training produced.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalResult {
    /// The trained weights, in the task's layout.
    pub weights: Vec<f32>,
    /// Examples trained on (weights FedAvg's mean).
    pub examples: u64,
    /// Mean training loss over the steps.
    pub loss: f32,
    /// Optimiser steps taken.
    pub steps: u64,
}

/// A model's quality on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Share of examples classified correctly.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Examples evaluated.
    pub examples: u64,
}

/// Why a task could not train or evaluate.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum TaskError {
    /// The weights given do not fit the model.
    #[error("{got} weights for a model of {expected} parameters")]
    Layout {
        /// Parameters of the model.
        expected: usize,
        /// Weights given.
        got: usize,
    },
    /// No examples to train or evaluate on.
    #[error("no examples")]
    Empty,
    /// Training diverged.
    #[error("non-finite training loss at step {step}")]
    Diverged {
        /// The step.
        step: u64,
    },
    /// Settings the task cannot use.
    #[error("{0}")]
    Config(String),
}

/// A federated task. Implementations are shared between the workers of a simulation, so
/// they hold no per-client state: everything a client keeps lives in its data and in the
/// update encoder.
pub trait Task: Send + Sync {
    /// One client's (or the test) data.
    type Data: Send + Sync;

    /// The name devices and cloud agree on (`fmnist`).
    fn name(&self) -> &'static str;

    /// The model's parameters.
    fn layout(&self) -> &Layout;

    /// A freshly initialised model from `seed`.
    fn initial_weights(&self, seed: u64) -> Vec<f32>;

    /// Examples in `data`.
    fn examples(&self, data: &Self::Data) -> u64;

    /// Trains from `global` on `data`; `seed` fixes the batch order.
    fn train(
        &self,
        global: &[f32],
        data: &Self::Data,
        config: &LocalConfig,
        seed: u64,
    ) -> Result<LocalResult, TaskError>;

    /// Evaluates `weights` on `data`.
    fn evaluate(&self, weights: &[f32], data: &Self::Data) -> Result<Evaluation, TaskError>;

    /// The examples of `parts` at `order` (from [`pooled_order`]), as one data set: what
    /// a centralised baseline trains on.
    fn pool(&self, parts: &[Self::Data], order: &[(usize, usize)]) -> Self::Data;
}

/// The examples a centralised baseline trains on: `count` (part, index) pairs drawn from
/// parts of `sizes` examples pooled, in a shuffle from `seed`, reshuffled for each pass
/// when `count` is more than they hold. Empty when the parts are.
pub fn pooled_order(sizes: &[usize], count: u64, seed: u64) -> Vec<(usize, usize)> {
    let all: Vec<(usize, usize)> = sizes
        .iter()
        .enumerate()
        .flat_map(|(part, &n)| (0..n).map(move |i| (part, i)))
        .collect();
    if all.is_empty() {
        return Vec::new();
    }
    let mut rng = SplitMix64::new(seed);
    let mut order = Vec::with_capacity(count.min(1 << 24) as usize);
    while (order.len() as u64) < count {
        let mut pass = all.clone();
        rng.shuffle(&mut pass);
        let left = (count - order.len() as u64).min(pass.len() as u64) as usize;
        order.extend_from_slice(&pass[..left]);
    }
    order
}
