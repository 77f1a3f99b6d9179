//! The centralised baseline of a simulated federated run: one model trained on the
//! clients' data pooled, on as many examples as the run's rounds would see.

use super::{Simulation, SimulationError};
use std::time::Instant;
use tandem_runtime::fl::task::{Evaluation, LocalConfig, Task, pooled_order};

/// A centralised baseline's figures.
#[derive(Clone, Copy, Debug)]
pub struct Centralised {
    /// Examples trained on.
    pub examples: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Mean training loss over the steps.
    pub train_loss: f32,
    /// The trained model on the test set.
    pub eval: Evaluation,
    /// Wall time, evaluation included.
    pub seconds: f64,
}

impl<T: Task> Simulation<'_, T> {
    /// Examples the clients sampled in rounds `1..=rounds` hold, times the local epochs:
    /// what a federated run of `rounds` rounds trains on (clients that drop out aside),
    /// known before any training because the sampling follows the seed.
    pub fn examples_to_see(&self, rounds: u64) -> u64 {
        let epochs = u64::from(self.config.local.epochs);
        (1..=rounds)
            .flat_map(|round| self.sample(round))
            .map(|client| self.task.examples(&self.clients[client]) * epochs)
            .sum()
    }

    /// The centralised baseline of a federated run of `rounds` rounds: one model, from
    /// the run's initial weights (whatever rounds have run), trained with the same local
    /// settings in one pass over as many examples as the run would see
    /// ([`Simulation::examples_to_see`]), drawn from all clients' data pooled (a shuffle
    /// from the seed, repeated if it must be), then evaluated on the test set.
    pub fn centralised(&self, rounds: u64) -> Result<Centralised, SimulationError> {
        let started = Instant::now();
        let sizes: Vec<usize> = self
            .clients
            .iter()
            .map(|c| self.task.examples(c) as usize)
            .collect();
        let examples = self.examples_to_see(rounds);
        let order = pooled_order(&sizes, examples, self.config.seed ^ 0xce47_4a11);
        let pooled = self.task.pool(self.clients, &order);
        let local = LocalConfig {
            epochs: 1,
            proximal_mu: 0.0,
            ..self.config.local
        };
        let initial = self.task.initial_weights(self.config.seed);
        let trained = self
            .task
            .train(&initial, &pooled, &local, self.config.seed)
            .map_err(|error| SimulationError::Task { client: 0, error })?;
        let eval = self
            .task
            .evaluate(&trained.weights, self.test)
            .map_err(SimulationError::Evaluation)?;
        Ok(Centralised {
            examples,
            steps: trained.steps,
            train_loss: trained.loss,
            eval,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
