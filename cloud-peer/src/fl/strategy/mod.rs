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

use std::fmt;
use std::str::FromStr;

/// A decoded, validated update.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientUpdate {
    /// `local - global`, in the task's layout.
    pub delta: Vec<f32>,
    /// Examples it was trained on (already capped by validation).
    pub examples: u64,
}

/// An aggregation rule and its settings.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum StrategyKind {
    /// Example-weighted mean of the deltas.
    FedAvg,
    /// FedAvg with a proximal term of weight `mu` in local training.
    FedProx {
        /// Proximal weight.
        mu: f32,
    },
    /// FedAvg with server momentum.
    FedAvgM {
        /// Server learning rate.
        lr: f32,
        /// Server momentum.
        momentum: f32,
    },
    /// Adaptive server optimisers.
    FedOpt {
        /// Which one.
        rule: AdaptiveRule,
        /// Server learning rate (eta).
        lr: f32,
        /// Adaptivity (tau).
        tau: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
    },
    /// Coordinate-wise median.
    Median,
    /// Coordinate-wise mean without the `beta` share at each end.
    TrimmedMean {
        /// Share trimmed at each end, in [0, 0.5).
        beta: f32,
    },
    /// The `keep` updates with the lowest Krum scores, averaged (Krum when `keep` is 1),
    /// for at most `byzantine` hostile clients.
    Krum {
        /// Hostile clients tolerated (f).
        byzantine: usize,
        /// Updates kept (m).
        keep: usize,
    },
}

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
}

impl StrategyKind {
    /// Whether the strategy aggregates a (weighted) mean of the updates, which is all
    /// that central DP's noise and secure aggregation's sum leave to aggregate.
    pub fn is_mean_based(&self) -> bool {
        !matches!(
            self,
            StrategyKind::Median | StrategyKind::TrimmedMean { .. } | StrategyKind::Krum { .. }
        )
    }

    /// Updates a round needs for this rule to aggregate (Krum's guarantee needs
    /// `2f + 3`).
    pub fn min_updates(&self) -> usize {
        match self {
            Self::Krum { byzantine, .. } => 2 * byzantine + 3,
            _ => 1,
        }
    }

    /// The proximal weight devices use in local training.
    pub fn proximal_mu(&self) -> f32 {
        match self {
            Self::FedProx { mu } => *mu,
            _ => 0.0,
        }
    }
}

/// `key=value` pairs of a spec's tail.
fn parameters(spec: &str, tail: &str) -> Result<Vec<(String, f64)>, StrategyError> {
    tail.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| StrategyError::Syntax(spec.into()))?;
            let v: f64 = v.parse().map_err(|_| StrategyError::Syntax(spec.into()))?;
            if !v.is_finite() {
                return Err(StrategyError::Syntax(spec.into()));
            }
            Ok((k.to_string(), v))
        })
        .collect()
}

fn check(
    name: &'static str,
    value: f64,
    ok: bool,
    why: &'static str,
) -> Result<f64, StrategyError> {
    if ok {
        Ok(value)
    } else {
        Err(StrategyError::Parameter { name, value, why })
    }
}

impl FromStr for StrategyKind {
    type Err = StrategyError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (name, tail) = spec.split_once(':').unwrap_or((spec, ""));
        let params = parameters(spec, tail)?;
        let allowed: &[&str] = match name {
            "fedavg" | "median" => &[],
            "fedprox" => &["mu"],
            "fedavgm" => &["lr", "momentum"],
            "fedadam" | "fedyogi" | "fedadagrad" => &["lr", "tau", "beta1", "beta2"],
            "trimmed-mean" => &["beta"],
            "krum" => &["f"],
            "multi-krum" => &["f", "m"],
            _ => return Err(StrategyError::Syntax(spec.into())),
        };
        if params.iter().any(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(StrategyError::Syntax(spec.into()));
        }
        let get = |key: &str, default: f64| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map_or(default, |(_, v)| *v)
        };
        let positive = "must be above 0";
        let unit = "must be in [0, 1)";
        let count = |key: &'static str, default: f64| {
            let v = get(key, default);
            check(
                key,
                v,
                v >= 0.0 && v.fract() == 0.0 && v <= 1e6,
                "must be a count",
            )
            .map(|v| v as usize)
        };
        Ok(match name {
            "fedavg" => Self::FedAvg,
            "median" => Self::Median,
            "fedprox" => {
                let mu = get("mu", 0.01);
                Self::FedProx {
                    mu: check("mu", mu, mu > 0.0 && mu <= 1e3, positive)? as f32,
                }
            }
            "fedavgm" => {
                // Hsu et al.'s effective step lr / (1 - momentum) = 1: plain FedAvg's size.
                // (lr 1 with momentum 0.9 diverged on shards:2 Fashion-MNIST.)
                let (lr, momentum) = (get("lr", 0.1), get("momentum", 0.9));
                Self::FedAvgM {
                    lr: check("lr", lr, lr > 0.0 && lr <= 1e3, positive)? as f32,
                    momentum: check(
                        "momentum",
                        momentum,
                        (0.0..1.0).contains(&(momentum as f32)),
                        unit,
                    )? as f32,
                }
            }
            "fedadam" | "fedyogi" | "fedadagrad" => {
                // Flower's defaults (flwr.server.strategy.FedAdam / FedYogi / FedAdagrad).
                let (rule, lr, tau) = match name {
                    "fedadam" => (AdaptiveRule::Adam, 0.1, 1e-9),
                    "fedyogi" => (AdaptiveRule::Yogi, 0.01, 1e-3),
                    _ => (AdaptiveRule::Adagrad, 0.1, 1e-9),
                };
                let (lr, tau) = (get("lr", lr), get("tau", tau));
                // Flower's FedAdagrad runs with beta_1 = beta_2 = 0 (m is the delta itself).
                let beta1_default = if rule == AdaptiveRule::Adagrad {
                    0.0
                } else {
                    0.9
                };
                let (beta1, beta2) = (get("beta1", beta1_default), get("beta2", 0.99));
                Self::FedOpt {
                    rule,
                    lr: check("lr", lr, lr > 0.0 && lr <= 1e3, positive)? as f32,
                    tau: check("tau", tau, tau > 0.0 && tau <= 1.0, "must be in (0, 1]")? as f32,
                    beta1: check("beta1", beta1, (0.0..1.0).contains(&(beta1 as f32)), unit)?
                        as f32,
                    beta2: check("beta2", beta2, (0.0..1.0).contains(&(beta2 as f32)), unit)?
                        as f32,
                }
            }
            "trimmed-mean" => {
                let beta = get("beta", 0.2);
                Self::TrimmedMean {
                    beta: check(
                        "beta",
                        beta,
                        (0.0..0.5).contains(&(beta as f32)),
                        "must be in [0, 0.5)",
                    )? as f32,
                }
            }
            "krum" => Self::Krum {
                byzantine: count("f", 1.0)?,
                keep: 1,
            },
            _ => {
                let keep = count("m", 5.0)?;
                Self::Krum {
                    byzantine: count("f", 1.0)?,
                    keep: check("m", keep as f64, keep >= 1, "must be at least 1")? as usize,
                }
            }
        })
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FedAvg => write!(f, "fedavg"),
            Self::FedProx { mu } => write!(f, "fedprox:mu={mu}"),
            Self::FedAvgM { lr, momentum } => write!(f, "fedavgm:lr={lr},momentum={momentum}"),
            Self::FedOpt {
                rule,
                lr,
                tau,
                beta1,
                beta2,
            } => {
                let name = match rule {
                    AdaptiveRule::Adam => "fedadam",
                    AdaptiveRule::Yogi => "fedyogi",
                    AdaptiveRule::Adagrad => "fedadagrad",
                };
                write!(f, "{name}:lr={lr},tau={tau},beta1={beta1},beta2={beta2}")
            }
            Self::Median => write!(f, "median"),
            Self::TrimmedMean { beta } => write!(f, "trimmed-mean:beta={beta}"),
            Self::Krum { byzantine, keep: 1 } => write!(f, "krum:f={byzantine}"),
            Self::Krum { byzantine, keep } => write!(f, "multi-krum:f={byzantine},m={keep}"),
        }
    }
}

/// A strategy with its server-side state (momentum and moments), which the cloud
/// checkpoints with the global model.
#[derive(Clone, Debug, PartialEq)]
pub struct Strategy {
    kind: StrategyKind,
    /// First moment (FedAvgM's velocity, FedOpt's m); empty until first used.
    pub first: Vec<f32>,
    /// FedOpt's second moment; empty until first used.
    pub second: Vec<f32>,
    /// Aggregations done (for bias correction).
    pub steps: u64,
}

/// What an aggregation used.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregated {
    /// Indices of the updates that entered the new model (all but Krum's rejects).
    pub selected: Vec<usize>,
}

impl Strategy {
    /// A fresh strategy.
    pub fn new(kind: StrategyKind) -> Self {
        Self {
            kind,
            first: Vec::new(),
            second: Vec::new(),
            steps: 0,
        }
    }

    /// Its rule.
    pub fn kind(&self) -> StrategyKind {
        self.kind
    }

    /// Applies `updates` to `global`.
    pub fn aggregate(
        &mut self,
        global: &mut [f32],
        updates: &[ClientUpdate],
    ) -> Result<Aggregated, StrategyError> {
        if updates.is_empty() {
            return Err(StrategyError::Empty);
        }
        if let Some(bad) = updates.iter().find(|u| u.delta.len() != global.len()) {
            return Err(StrategyError::Length {
                expected: global.len(),
                got: bad.delta.len(),
            });
        }
        // Moments are updated in place: restored if the result is not finite.
        let before = self.clone();
        let all: Vec<usize> = (0..updates.len()).collect();
        let rows = || {
            updates
                .iter()
                .map(|u| u.delta.as_slice())
                .collect::<Vec<_>>()
        };
        let (step, selected) = match self.kind {
            StrategyKind::FedAvg | StrategyKind::FedProx { .. } => {
                (weighted_mean(updates, &all), all)
            }
            StrategyKind::FedAvgM { lr, momentum } => {
                let mean = weighted_mean(updates, &all);
                if self.first.is_empty() {
                    self.first = mean;
                } else {
                    for (v, d) in self.first.iter_mut().zip(&mean) {
                        *v = momentum * *v + d;
                    }
                }
                (self.first.iter().map(|v| lr * v).collect(), all)
            }
            StrategyKind::FedOpt { .. } => (self.adaptive(&weighted_mean(updates, &all)), all),
            StrategyKind::Median => (tandem_kernels::median(&rows())?, all),
            StrategyKind::TrimmedMean { beta } => {
                (tandem_kernels::trimmed_mean(&rows(), beta)?, all)
            }
            StrategyKind::Krum { byzantine, keep } => {
                let selected = krum_select(updates, byzantine, keep)?;
                (mean(updates, &selected), selected)
            }
        };
        let next: Vec<f32> = global.iter().zip(&step).map(|(w, s)| w + s).collect();
        if let Some(at) = next.iter().position(|v| !v.is_finite()) {
            *self = before;
            return Err(StrategyError::NonFinite { at });
        }
        global.copy_from_slice(&next);
        self.steps += 1;
        Ok(Aggregated { selected })
    }

    /// One FedOpt step on the pseudo-gradient `delta`; returns the change to the model.
    fn adaptive(&mut self, delta: &[f32]) -> Vec<f32> {
        let StrategyKind::FedOpt {
            rule,
            lr,
            tau,
            beta1,
            beta2,
        } = self.kind
        else {
            unreachable!("adaptive() is only called for FedOpt");
        };
        if self.first.len() != delta.len() || self.second.len() != delta.len() {
            self.first = vec![0.0; delta.len()];
            self.second = vec![0.0; delta.len()];
        }
        // Flower bias-corrects FedAdam's step only, with t = server_round + 1 (so 2 in
        // the first round).
        let t = (self.steps + 2).min(i32::MAX as u64) as i32;
        let step_lr = match rule {
            AdaptiveRule::Adam => lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t)),
            AdaptiveRule::Yogi | AdaptiveRule::Adagrad => lr,
        };
        let mut out = Vec::with_capacity(delta.len());
        for ((m, v), &d) in self.first.iter_mut().zip(&mut self.second).zip(delta) {
            *m = beta1 * *m + (1.0 - beta1) * d;
            let d2 = d * d;
            *v = match rule {
                AdaptiveRule::Adam => beta2 * *v + (1.0 - beta2) * d2,
                AdaptiveRule::Yogi => *v - (1.0 - beta2) * d2 * sign(*v - d2),
                AdaptiveRule::Adagrad => *v + d2,
            };
            out.push(step_lr * *m / (v.max(0.0).sqrt() + tau));
        }
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

/// `sum(n_i d_i) / sum(n_i)` over `which`, in f64.
fn weighted_mean(updates: &[ClientUpdate], which: &[usize]) -> Vec<f32> {
    mean_by(updates, which, |u| u.examples.max(1) as f64)
}

/// The plain mean over `which`: robust rules give a claimed example count no weight.
fn mean(updates: &[ClientUpdate], which: &[usize]) -> Vec<f32> {
    mean_by(updates, which, |_| 1.0)
}

fn mean_by(
    updates: &[ClientUpdate],
    which: &[usize],
    weight: impl Fn(&ClientUpdate) -> f64,
) -> Vec<f32> {
    let len = updates[which[0]].delta.len();
    let total: f64 = which.iter().map(|&i| weight(&updates[i])).sum();
    let mut acc = vec![0.0f64; len];
    for &i in which {
        let w = weight(&updates[i]) / total;
        for (a, &d) in acc.iter_mut().zip(&updates[i].delta) {
            *a += w * f64::from(d);
        }
    }
    acc.into_iter().map(|a| a as f32).collect()
}

/// Multi-Krum: the `keep` updates whose `n - f - 2` nearest neighbours are closest.
fn krum_select(
    updates: &[ClientUpdate],
    byzantine: usize,
    keep: usize,
) -> Result<Vec<usize>, StrategyError> {
    let n = updates.len();
    let needed = 2 * byzantine + 3;
    if n < needed {
        return Err(StrategyError::TooFew {
            byzantine,
            needed,
            got: n,
        });
    }
    let mut distance = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let d: f64 = updates[i]
                .delta
                .iter()
                .zip(&updates[j].delta)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            distance[i * n + j] = d;
            distance[j * n + i] = d;
        }
    }
    let neighbours = n - byzantine - 2;
    let mut scores: Vec<(f64, usize)> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| distance[i * n + j])
                .collect();
            row.sort_unstable_by(f64::total_cmp);
            (row[..neighbours].iter().sum(), i)
        })
        .collect();
    scores.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut selected: Vec<usize> = scores.iter().take(keep.min(n)).map(|&(_, i)| i).collect();
    selected.sort_unstable();
    Ok(selected)
}

#[cfg(test)]
mod tests;
