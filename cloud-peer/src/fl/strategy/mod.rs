//! How the cloud turns a round's accepted updates into the next global model.
//!
//! Every strategy sees the updates as deltas (`local - global`) with their example
//! counts. The mean-based ones follow Flower's definitions:
//! - FedAvg (McMahan et al. 2017): `w += sum(n_i d_i) / sum(n_i)`; FedProx is FedAvg on
//!   the cloud, with the proximal weight `mu` sent to the devices.
//! - FedAvgM (Hsu et al. 2019): `v = beta v + d_avg`, `w += lr v` (by default lr 0.1,
//!   beta 0.9: an effective step `lr / (1 - beta)` of 1).
//! - FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021): `d_avg` is the pseudo-gradient of
//!   an adaptive server optimiser, `w += lr m / (sqrt(v) + tau)`; FedAdam's step is
//!   bias-corrected by `sqrt(1-b2^t)/(1-b1^t)` with `t = round + 1`, and FedAdagrad runs
//!   with `beta1 = beta2 = 0`, as Flower does; Yogi's sign is 0 at 0, as NumPy's.
//!
//! The robust ones ignore example counts (a liar cannot buy weight) and run on the
//! kernels: coordinate-wise median and trimmed mean (`tandem_kernels::robust`), Krum and
//! Multi-Krum (Blanchard et al. 2017).
//!
//! Each strategy is a type of its own implementing [`Strategy`] (the hooks that
//! configure a round's local training and aggregate its updates, and the server state it
//! owns); the mean-based ones are [`LinearStrategy`] too: a weighted sum of the updates
//! ([`PartialSum`], which sums made in other processes merge into) and a server step
//! from its mean. A new strategy is a file here and its line in [`spec::parse`].

mod adaptive;
mod mean;
mod momentum;
mod robust;
mod spec;

pub use adaptive::{AdaptiveRule, FedOpt};
pub use mean::{FedAvg, FedProx, PartialSum};
pub use momentum::FedAvgM;
pub use robust::{Krum, Median, TrimmedMean};
pub use spec::StrategySpec;

use tandem_runtime::fl::task::LocalConfig;

/// A decoded, validated update.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientUpdate {
    /// `local - global`, in the task's layout.
    pub delta: Vec<f32>,
    /// Examples it was trained on (already capped by validation).
    pub examples: u64,
}

/// What an aggregation used.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregated {
    /// Indices of the updates that entered the new model (all but Krum's rejects).
    pub selected: Vec<usize>,
}

/// The server state a strategy keeps between rounds (an optimiser's first and second
/// moments, and its steps), as the run's state file stores it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StrategyState {
    /// First moment (FedAvgM's velocity, FedOpt's m); empty until first used.
    pub first: Vec<f32>,
    /// Second moment (FedOpt's v); empty until first used.
    pub second: Vec<f32>,
    /// Aggregations done, where the strategy counts them (FedOpt's bias correction).
    pub steps: u64,
}

/// A strategy that cannot be parsed or cannot aggregate.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum StrategyError {
    /// Not a known strategy or parameter.
    #[error(
        "strategy '{0}': expected fedavg, fedprox:mu=M, fedavgm[:lr=L,momentum=B], fedadam|fedyogi|fedadagrad[:lr=L,tau=T,beta1=B1,beta2=B2], median, trimmed-mean[:beta=B], krum[:f=F] or multi-krum[:f=F,m=M]"
    )]
    Syntax(String),
    /// A parameter outside its range.
    #[error("strategy parameter {name}={value}: {why}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The range it must be in.
        why: &'static str,
    },
    /// No updates to aggregate.
    #[error("no updates to aggregate")]
    Empty,
    /// Updates of different lengths, or not the model's.
    #[error("an update of {got} values for a model of {expected}")]
    Length {
        /// The model's parameters.
        expected: usize,
        /// The update's values.
        got: usize,
    },
    /// A kernel refused the rows (only for inputs checked away above; kept typed).
    #[error(transparent)]
    Kernel(#[from] tandem_kernels::KernelError),
    /// The aggregate is not finite (finite but huge updates); the model is left as it was.
    #[error("the aggregate holds a non-finite value at parameter {at}; round not applied")]
    NonFinite {
        /// The first such parameter.
        at: usize,
    },
    /// Krum needs `n >= 2f + 3` updates for its guarantee.
    #[error("krum with f={byzantine} needs at least {needed} updates, got {got}")]
    TooFew {
        /// f.
        byzantine: usize,
        /// 2f + 3.
        needed: usize,
        /// Updates at hand.
        got: usize,
    },
    /// Saved server state that is not this strategy's (another model's size, or moments
    /// a strategy without any).
    #[error("the saved state of strategy {spec} does not fit it: {why}")]
    State {
        /// The strategy.
        spec: String,
        /// What does not fit.
        why: String,
    },
}

/// An aggregation rule, with the server state it owns (FedAvgM's velocity, FedOpt's
/// moments): the hooks a round engine calls, after Flower's `Strategy`.
pub trait Strategy: std::fmt::Debug + Send + Sync {
    /// Its spec, as `--strategy` takes it (a run's state file records it, and a run
    /// restarted under another spec is refused).
    fn spec(&self) -> String;

    /// The same rule with no state: what a new run starts from.
    fn fresh(&self) -> Box<dyn Strategy>;

    /// Configures each device's local training for the rounds (FedProx's proximal
    /// weight). The default leaves it as it is.
    fn configure(&self, local: &mut LocalConfig) {
        let _ = local;
    }

    /// Updates a round needs for the rule to aggregate.
    fn min_updates(&self) -> usize {
        1
    }

    /// The rule as a weighted mean and a server step, if it is one: all that central
    /// DP's noised mean and secure aggregation's sum leave to aggregate, and what
    /// partial sums made elsewhere combine into. `None` for the robust rules.
    fn linear(&mut self) -> Option<&mut dyn LinearStrategy> {
        None
    }

    /// Applies `updates` to `global`; on an error the model and the strategy's state are
    /// as they were. The default, for a linear rule, sums the updates by their weights
    /// and steps from the mean.
    fn aggregate(
        &mut self,
        global: &mut [f32],
        updates: &[ClientUpdate],
    ) -> Result<Aggregated, StrategyError> {
        check_round(global, updates)?;
        let spec = self.spec();
        let linear = self.linear().ok_or(StrategyError::State {
            spec,
            why: "a strategy that is not a weighted mean must aggregate by itself".into(),
        })?;
        let mut sum = PartialSum::new(global.len());
        for update in updates {
            sum.accumulate(update, linear.weight(update))?;
        }
        linear.finish(global, &sum.mean()?)?;
        Ok(Aggregated {
            selected: (0..updates.len()).collect(),
        })
    }

    /// Its server state, for the run's state file.
    fn state(&self) -> StrategyState {
        StrategyState::default()
    }

    /// Goes on from a saved state. The default, for a rule with no state, takes one
    /// without moments (its step count is not its own).
    fn restore(&mut self, state: StrategyState) -> Result<(), StrategyError> {
        if state.first.is_empty() && state.second.is_empty() {
            return Ok(());
        }
        Err(StrategyError::State {
            spec: self.spec(),
            why: "it keeps no moments".into(),
        })
    }
}

/// A strategy whose aggregate is a weighted mean of the updates, then a server step.
pub trait LinearStrategy: Strategy {
    /// An update's weight in the mean: its examples (at least 1).
    fn weight(&self, update: &ClientUpdate) -> f64 {
        update.examples.max(1) as f64
    }

    /// The change to the model from the round's weighted mean (plain, with momentum,
    /// or adaptive); the strategy's state moves with it.
    fn step(&mut self, mean: &[f32]) -> Vec<f32>;

    /// Applies the step from `mean` to `global`, or leaves both the model and the state
    /// as they were when the result would not be finite.
    fn finish(&mut self, global: &mut [f32], mean: &[f32]) -> Result<(), StrategyError> {
        if mean.len() != global.len() {
            return Err(StrategyError::Length {
                expected: global.len(),
                got: mean.len(),
            });
        }
        let before = self.state();
        let step = self.step(mean);
        if let Err(err) = apply_step(global, &step) {
            self.restore(before)?;
            return Err(err);
        }
        Ok(())
    }
}

/// Refuses an empty round, and updates that are not the model's length.
pub(super) fn check_round(global: &[f32], updates: &[ClientUpdate]) -> Result<(), StrategyError> {
    if updates.is_empty() {
        return Err(StrategyError::Empty);
    }
    match updates.iter().find(|u| u.delta.len() != global.len()) {
        Some(bad) => Err(StrategyError::Length {
            expected: global.len(),
            got: bad.delta.len(),
        }),
        None => Ok(()),
    }
}

/// `global += step`, unless a value would not be finite (then nothing changes).
pub(super) fn apply_step(global: &mut [f32], step: &[f32]) -> Result<(), StrategyError> {
    let next: Vec<f32> = global.iter().zip(step).map(|(w, s)| w + s).collect();
    if let Some(at) = next.iter().position(|v| !v.is_finite()) {
        return Err(StrategyError::NonFinite { at });
    }
    global.copy_from_slice(&next);
    Ok(())
}

#[cfg(test)]
mod tests;
