//! FedAvgM (Hsu et al. 2019): FedAvg with server momentum.

use super::{LinearStrategy, Strategy, StrategyError, StrategyState};

/// `v = momentum v + d_avg`, `w += lr v`.
#[derive(Clone, Debug, PartialEq)]
pub struct FedAvgM {
    /// Server learning rate.
    pub lr: f32,
    /// Server momentum.
    pub momentum: f32,
    /// The velocity; empty until the first round.
    velocity: Vec<f32>,
}

impl FedAvgM {
    /// With no velocity yet.
    pub fn new(lr: f32, momentum: f32) -> Self {
        Self {
            lr,
            momentum,
            velocity: Vec::new(),
        }
    }
}

impl Strategy for FedAvgM {
    fn spec(&self) -> String {
        format!("fedavgm:lr={},momentum={}", self.lr, self.momentum)
    }

    fn fresh(&self) -> Box<dyn Strategy> {
        Box::new(Self::new(self.lr, self.momentum))
    }

    fn linear(&mut self) -> Option<&mut dyn LinearStrategy> {
        Some(self)
    }

    fn state(&self) -> StrategyState {
        StrategyState {
            first: self.velocity.clone(),
            ..StrategyState::default()
        }
    }

    fn restore(&mut self, state: StrategyState) -> Result<(), StrategyError> {
        if !state.second.is_empty() {
            return Err(StrategyError::State {
                spec: self.spec(),
                why: "it keeps no second moment".into(),
            });
        }
        self.velocity = state.first;
        Ok(())
    }
}

impl LinearStrategy for FedAvgM {
    fn step(&mut self, mean: &[f32]) -> Vec<f32> {
        if self.velocity.len() != mean.len() {
            self.velocity = mean.to_vec();
        } else {
            for (v, d) in self.velocity.iter_mut().zip(mean) {
                *v = self.momentum * *v + d;
            }
        }
        self.velocity.iter().map(|v| self.lr * v).collect()
    }
}
