//! FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021): the round's weighted mean is the
//! pseudo-gradient of an adaptive server optimiser.

use super::{LinearStrategy, Strategy, StrategyError, StrategyState};

/// The second-moment rule of a FedOpt strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveRule {
    /// `v = b2 v + (1-b2) d^2`.
    Adam,
    /// `v = v - (1-b2) d^2 sign(v - d^2)`.
    Yogi,
    /// `v = v + d^2`.
    Adagrad,
}

impl AdaptiveRule {
    /// Its strategy's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Adam => "fedadam",
            Self::Yogi => "fedyogi",
            Self::Adagrad => "fedadagrad",
        }
    }
}

/// An adaptive server optimiser: `w += lr m / (sqrt(v) + tau)`.
#[derive(Clone, Debug, PartialEq)]
pub struct FedOpt {
    /// Which one.
    pub rule: AdaptiveRule,
    /// Server learning rate (eta).
    pub lr: f32,
    /// Adaptivity (tau).
    pub tau: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// The moments (empty until the first round) and the steps taken.
    moments: StrategyState,
}

impl FedOpt {
    /// With no moments yet.
    pub fn new(rule: AdaptiveRule, lr: f32, tau: f32, beta1: f32, beta2: f32) -> Self {
        Self {
            rule,
            lr,
            tau,
            beta1,
            beta2,
            moments: StrategyState::default(),
        }
    }
}

impl Strategy for FedOpt {
    fn spec(&self) -> String {
        format!(
            "{}:lr={},tau={},beta1={},beta2={}",
            self.rule.name(),
            self.lr,
            self.tau,
            self.beta1,
            self.beta2
        )
    }

    fn fresh(&self) -> Box<dyn Strategy> {
        Box::new(Self::new(
            self.rule, self.lr, self.tau, self.beta1, self.beta2,
        ))
    }

    fn linear(&mut self) -> Option<&mut dyn LinearStrategy> {
        Some(self)
    }

    fn state(&self) -> StrategyState {
        self.moments.clone()
    }

    fn restore(&mut self, state: StrategyState) -> Result<(), StrategyError> {
        if state.first.len() != state.second.len() {
            return Err(StrategyError::State {
                spec: self.spec(),
                why: format!(
                    "moments of {} and {} values",
                    state.first.len(),
                    state.second.len()
                ),
            });
        }
        self.moments = state;
        Ok(())
    }
}

impl LinearStrategy for FedOpt {
    fn step(&mut self, delta: &[f32]) -> Vec<f32> {
        let (rule, lr, tau, beta1, beta2) = (self.rule, self.lr, self.tau, self.beta1, self.beta2);
        let StrategyState {
            first,
            second,
            steps,
        } = &mut self.moments;
        if first.len() != delta.len() || second.len() != delta.len() {
            *first = vec![0.0; delta.len()];
            *second = vec![0.0; delta.len()];
        }
        // Flower bias-corrects FedAdam's step only, with t = server_round + 1 (so 2 in
        // the first round).
        let t = (*steps + 2).min(i32::MAX as u64) as i32;
        let step_lr = match rule {
            AdaptiveRule::Adam => lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t)),
            AdaptiveRule::Yogi | AdaptiveRule::Adagrad => lr,
        };
        let mut out = Vec::with_capacity(delta.len());
        for ((m, v), &d) in first.iter_mut().zip(second.iter_mut()).zip(delta) {
            *m = beta1 * *m + (1.0 - beta1) * d;
            let d2 = d * d;
            *v = match rule {
                AdaptiveRule::Adam => beta2 * *v + (1.0 - beta2) * d2,
                AdaptiveRule::Yogi => *v - (1.0 - beta2) * d2 * sign(*v - d2),
                AdaptiveRule::Adagrad => *v + d2,
            };
            out.push(step_lr * *m / (v.max(0.0).sqrt() + tau));
        }
        *steps += 1;
        out
    }
}

/// NumPy's sign: 0 at 0 (Rust's `signum` gives 1), as Flower's FedYogi uses it.
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
