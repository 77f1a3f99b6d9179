//! `--strategy` specs (`name[:key=value,...]`): parsed into a strategy, and the spec a
//! run's settings carry, from which each run makes its own.

use super::{
    AdaptiveRule, FedAvg, FedAvgM, FedOpt, FedProx, Krum, Median, Strategy, StrategyError,
    TrimmedMean,
};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use tandem_runtime::fl::task::LocalConfig;

/// A strategy as `--strategy` names it: checked once, each run's strategy made fresh from
/// it ([`StrategySpec::build`]).
#[derive(Clone)]
pub struct StrategySpec(Arc<dyn Strategy>);

impl StrategySpec {
    /// The spec of `strategy` (its state is not kept).
    pub fn of(strategy: &dyn Strategy) -> Self {
        Self(Arc::from(strategy.fresh()))
    }

    /// A fresh strategy of this spec.
    pub fn build(&self) -> Box<dyn Strategy> {
        self.0.fresh()
    }

    /// Whether it aggregates a weighted mean (all central DP and secure aggregation
    /// leave to aggregate).
    pub fn is_linear(&self) -> bool {
        self.build().linear().is_some()
    }

    /// Updates a round needs.
    pub fn min_updates(&self) -> usize {
        self.0.min_updates()
    }

    /// Configures devices' local training ([`Strategy::configure`]).
    pub fn configure(&self, local: &mut LocalConfig) {
        self.0.configure(local);
    }
}

impl Default for StrategySpec {
    /// FedAvg.
    fn default() -> Self {
        Self(Arc::new(FedAvg))
    }
}

impl fmt::Display for StrategySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.spec())
    }
}

impl fmt::Debug for StrategySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StrategySpec({})", self.0.spec())
    }
}

impl PartialEq for StrategySpec {
    fn eq(&self, other: &Self) -> bool {
        self.0.spec() == other.0.spec()
    }
}

impl FromStr for StrategySpec {
    type Err = StrategyError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Ok(Self(Arc::from(parse(spec)?)))
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

/// The strategy `spec` names, with its parameters checked: every strategy's line.
pub fn parse(spec: &str) -> Result<Box<dyn Strategy>, StrategyError> {
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
        "fedavg" => Box::new(FedAvg),
        "median" => Box::new(Median),
        "fedprox" => {
            let mu = get("mu", 0.01);
            Box::new(FedProx {
                mu: check("mu", mu, mu > 0.0 && mu <= 1e3, positive)? as f32,
            })
        }
        "fedavgm" => {
            // Hsu et al.'s effective step lr / (1 - momentum) = 1: plain FedAvg's size.
            // (lr 1 with momentum 0.9 diverged on shards:2 Fashion-MNIST.)
            let (lr, momentum) = (get("lr", 0.1), get("momentum", 0.9));
            Box::new(FedAvgM::new(
                check("lr", lr, lr > 0.0 && lr <= 1e3, positive)? as f32,
                check(
                    "momentum",
                    momentum,
                    (0.0..1.0).contains(&(momentum as f32)),
                    unit,
                )? as f32,
            ))
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
            Box::new(FedOpt::new(
                rule,
                check("lr", lr, lr > 0.0 && lr <= 1e3, positive)? as f32,
                check("tau", tau, tau > 0.0 && tau <= 1.0, "must be in (0, 1]")? as f32,
                check("beta1", beta1, (0.0..1.0).contains(&(beta1 as f32)), unit)? as f32,
                check("beta2", beta2, (0.0..1.0).contains(&(beta2 as f32)), unit)? as f32,
            ))
        }
        "trimmed-mean" => {
            let beta = get("beta", 0.2);
            Box::new(TrimmedMean {
                beta: check(
                    "beta",
                    beta,
                    (0.0..0.5).contains(&(beta as f32)),
                    "must be in [0, 0.5)",
                )? as f32,
            })
        }
        "krum" => Box::new(Krum {
            byzantine: count("f", 1.0)?,
            keep: 1,
        }),
        _ => {
            let keep = count("m", 5.0)?;
            Box::new(Krum {
                byzantine: count("f", 1.0)?,
                keep: check("m", keep as f64, keep >= 1, "must be at least 1")? as usize,
            })
        }
    })
}
