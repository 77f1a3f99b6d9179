//! FedAvg and FedProx (the same mean on the cloud; FedProx's proximal weight goes to the
//! devices), and the weighted sum every linear strategy aggregates through.

use super::{ClientUpdate, LinearStrategy, Strategy, StrategyError};
use tandem_runtime::fl::task::LocalConfig;

/// A weighted sum of updates: accumulated where updates arrive, merged with sums made
/// elsewhere (another process's share of the round), its mean finished by a
/// [`LinearStrategy`]. In f64, so the order updates arrive in barely matters.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialSum {
    sum: Vec<f64>,
    weight: f64,
    count: usize,
}

impl PartialSum {
    /// An empty sum for a model of `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            sum: vec![0.0; len],
            weight: 0.0,
            count: 0,
        }
    }

    /// Adds `update` with `weight`.
    pub fn accumulate(&mut self, update: &ClientUpdate, weight: f64) -> Result<(), StrategyError> {
        if update.delta.len() != self.sum.len() {
            return Err(StrategyError::Length {
                expected: self.sum.len(),
                got: update.delta.len(),
            });
        }
        for (a, &d) in self.sum.iter_mut().zip(&update.delta) {
            *a += weight * f64::from(d);
        }
        self.weight += weight;
        self.count += 1;
        Ok(())
    }

    /// Adds another sum of the same round.
    pub fn merge(&mut self, other: &PartialSum) -> Result<(), StrategyError> {
        if other.sum.len() != self.sum.len() {
            return Err(StrategyError::Length {
                expected: self.sum.len(),
                got: other.sum.len(),
            });
        }
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        self.weight += other.weight;
        self.count += other.count;
        Ok(())
    }

    /// Updates in the sum.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The weighted mean.
    pub fn mean(&self) -> Result<Vec<f32>, StrategyError> {
        if self.count == 0 || self.weight <= 0.0 {
            return Err(StrategyError::Empty);
        }
        Ok(self.sum.iter().map(|a| (a / self.weight) as f32).collect())
    }
}

/// Example-weighted mean of the deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FedAvg;

impl Strategy for FedAvg {
    fn spec(&self) -> String {
        "fedavg".into()
    }

    fn fresh(&self) -> Box<dyn Strategy> {
        Box::new(*self)
    }

    fn linear(&mut self) -> Option<&mut dyn LinearStrategy> {
        Some(self)
    }
}

impl LinearStrategy for FedAvg {
    fn step(&mut self, mean: &[f32]) -> Vec<f32> {
        mean.to_vec()
    }
}

/// FedAvg with a proximal term of weight `mu` in local training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FedProx {
    /// Proximal weight.
    pub mu: f32,
}

impl Strategy for FedProx {
    fn spec(&self) -> String {
        format!("fedprox:mu={}", self.mu)
    }

    fn fresh(&self) -> Box<dyn Strategy> {
        Box::new(*self)
    }

    fn configure(&self, local: &mut LocalConfig) {
        local.proximal_mu = self.mu;
    }

    fn linear(&mut self) -> Option<&mut dyn LinearStrategy> {
        Some(self)
    }
}

impl LinearStrategy for FedProx {
    fn step(&mut self, mean: &[f32]) -> Vec<f32> {
        mean.to_vec()
    }
}
