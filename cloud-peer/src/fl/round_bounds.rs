//! A round's valid updates bounded against each other, after validation and before the
//! strategy: no update weighs more than a multiple of the round's median weight, and none
//! is longer than a multiple of the round's median norm (it is scaled down to that).
//!
//! Validation bounds each update alone (`--clip`, the declared count), which leaves one
//! device free to declare the most examples the cap allows and to send the longest update
//! the bound allows, in the direction it likes. Against the round's median, which one
//! device cannot move, its leverage over the mean is at most `weight x norm` times an
//! ordinary device's. Clipping at the median norm is adaptive clipping at the 0.5 quantile
//! (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping", whose
//! default target quantile it is). The median is the lower one, and norms are capped only
//! in rounds of at least [`MIN_FOR_NORM_CAP`] updates: of two, one device would set it.

use super::strategy::ClientUpdate;
use super::validate::{Validated, clip_to, exact_norm};
use std::fmt;
use std::str::FromStr;
use tandem_runtime::wire::NodeName;

/// How far past the round's medians an update may go (`None`: not bounded).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MedianCaps {
    /// An update weighs at most this many times the median weight.
    pub weight: Option<u64>,
    /// An update is scaled down to at most this many times the median norm.
    pub norm: Option<f64>,
}

impl MedianCaps {
    /// No bound.
    pub const OFF: Self = Self {
        weight: None,
        norm: None,
    };

    /// The networked cloud's default: weights and norms up to the round's medians (with
    /// twice the median weight, one device declaring 2^24 examples and sending its
    /// update sign-flipped x10 still cost 1.45 points beside nine honest ones with
    /// `--clip`, against 0.50 at the median: BENCHMARKS.md, `bench fl-attack`).
    pub const NETWORK: Self = Self {
        weight: Some(1),
        norm: Some(1.0),
    };
}

impl FromStr for MedianCaps {
    type Err = String;

    /// `off`, or `weight=W,norm=N` (either may be left out: not bounded), W an integer
    /// >= 1, N a number >= 1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "--median-caps {s}: expected off or weight=W,norm=N (W an integer >= 1, N a number >= 1; either may be left out)"
            )
        };
        if s == "off" {
            return Ok(Self::OFF);
        }
        let mut caps = Self::OFF;
        for part in s.split(',') {
            match part.split_once('=').ok_or_else(bad)? {
                ("weight", w) => {
                    caps.weight = Some(w.parse().ok().filter(|&w: &u64| w >= 1).ok_or_else(bad)?)
                }
                ("norm", n) => {
                    caps.norm = Some(
                        n.parse()
                            .ok()
                            .filter(|n: &f64| n.is_finite() && *n >= 1.0)
                            .ok_or_else(bad)?,
                    )
                }
                _ => return Err(bad()),
            }
        }
        Ok(caps)
    }
}

impl fmt::Display for MedianCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.weight, self.norm) {
            (None, None) => f.write_str("off"),
            (Some(w), None) => write!(f, "weight={w}"),
            (None, Some(n)) => write!(f, "norm={n}"),
            (Some(w), Some(n)) => write!(f, "weight={w},norm={n}"),
        }
    }
}

/// What the caps did to a round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bounded {
    /// Updates whose weight was lowered.
    pub weights: usize,
    /// The updates scaled down to the norm cap (positions in the round's list).
    pub scaled: Vec<usize>,
}

/// Updates a round needs before its norms are capped at their median: with two, the
/// lower median is the other device's (one sending a zero update would scale the other's
/// to nothing).
pub const MIN_FOR_NORM_CAP: usize = 3;

/// A round's valid updates as they are checked, one by one, then bounded against each
/// other: the one collection the networked commit and the simulation both fill.
#[derive(Debug, Default)]
pub struct RoundUpdates {
    /// The valid updates, ready to aggregate.
    pub valid: Vec<ClientUpdate>,
    /// Their devices, in the same order.
    pub contributors: Vec<NodeName>,
    /// The training losses their devices reported.
    pub train_losses: Vec<f32>,
    /// Updates refused.
    pub refused: usize,
    /// Whether each valid update was scaled down (by `--clip`, or by the median norm).
    clipped: Vec<bool>,
}

impl RoundUpdates {
    /// `node`'s update passed validation.
    pub fn accept(&mut self, node: NodeName, train_loss: f32, checked: Validated) {
        self.clipped.push(checked.clipped);
        self.valid.push(checked.update);
        self.contributors.push(node);
        self.train_losses.push(train_loss);
    }

    /// An update was refused.
    pub fn refuse(&mut self) {
        self.refused += 1;
    }

    /// Bounds the valid updates by `caps` ([`apply`]).
    pub fn bound(&mut self, caps: MedianCaps) -> Bounded {
        let bounded = apply(caps, &mut self.valid);
        for &at in &bounded.scaled {
            self.clipped[at] = true;
        }
        bounded
    }

    /// Valid updates scaled down, each once whether by `--clip` or the median or both.
    pub fn clipped(&self) -> usize {
        self.clipped.iter().filter(|&&c| c).count()
    }
}

/// The lower median of `values` (`None` if empty).
fn lower_median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// Bounds `updates` (validated: finite) by `caps`.
pub fn apply(caps: MedianCaps, updates: &mut [ClientUpdate]) -> Bounded {
    let mut bounded = Bounded::default();
    if let Some(factor) = caps.weight {
        let weights: Vec<u64> = updates.iter().map(|u| u.examples).collect();
        if let Some(median) = lower_median(&weights) {
            let cap = median.saturating_mul(factor).max(1);
            for update in updates.iter_mut().filter(|u| u.examples > cap) {
                update.examples = cap;
                bounded.weights += 1;
            }
        }
    }
    if let Some(factor) = caps.norm
        && updates.len() >= MIN_FOR_NORM_CAP
    {
        let norms: Vec<f64> = updates.iter().map(|u| exact_norm(&u.delta)).collect();
        if let Some(median) = lower_median(&norms) {
            let cap = median * factor;
            for (at, (update, &norm)) in updates.iter_mut().zip(&norms).enumerate() {
                if norm > cap {
                    clip_to(&mut update.delta, norm, cap);
                    bounded.scaled.push(at);
                }
            }
        }
    }
    bounded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(value: f32, examples: u64) -> ClientUpdate {
        ClientUpdate {
            delta: vec![value; 4],
            examples,
        }
    }

    /// Nine honest devices and one that declares 2^24 examples and sends its update
    /// sign-flipped x10: its share of the FedAvg mean falls from almost all of it to at
    /// most `weight x norm` ordinary devices', and the mean keeps the honest sign.
    #[test]
    fn one_inflated_sign_flipped_update_cannot_outweigh_the_round() {
        let mut updates: Vec<ClientUpdate> =
            (0..9).map(|i| update(0.1 + 0.01 * i as f32, 600)).collect();
        updates.push(update(-1.0, 1 << 24));
        let mean = |updates: &[ClientUpdate]| {
            let total: u64 = updates.iter().map(|u| u.examples).sum();
            updates
                .iter()
                .map(|u| f64::from(u.delta[0]) * u.examples as f64 / total as f64)
                .sum::<f64>()
        };
        assert!(
            mean(&updates) < -0.99,
            "unbounded, the attacker sets the mean"
        );
        let bounded = apply(MedianCaps::NETWORK, &mut updates);
        assert_eq!(
            bounded,
            Bounded {
                weights: 1,
                scaled: vec![5, 6, 7, 8, 9]
            }
        );
        let attacker = updates.last().unwrap();
        assert_eq!(attacker.examples, 600);
        // Scaled to the median norm (0.14 a value), sign kept.
        assert!(
            (attacker.delta[0] + 0.14).abs() < 1e-6,
            "{:?}",
            attacker.delta
        );
        let honest_mean = 0.14;
        let m = mean(&updates);
        assert!(
            m > 0.5 * honest_mean * 0.9,
            "the mean {m} lost the honest direction"
        );
    }

    #[test]
    fn an_honest_round_of_equals_is_left_alone_and_off_bounds_nothing() {
        let mut updates = vec![update(0.5, 100); 5];
        let before = updates.clone();
        assert_eq!(apply(MedianCaps::NETWORK, &mut updates), Bounded::default());
        assert_eq!(updates, before);
        let mut wild = vec![update(0.5, 100), update(50.0, 1 << 20), update(0.5, 100)];
        let kept = wild.clone();
        assert_eq!(apply(MedianCaps::OFF, &mut wild), Bounded::default());
        assert_eq!(wild, kept);
        assert_eq!(apply(MedianCaps::NETWORK, &mut []), Bounded::default());
        // Of two, a zero update does not scale the other's to nothing.
        let mut two = vec![update(0.0, 100), update(0.5, 100)];
        assert_eq!(apply(MedianCaps::NETWORK, &mut two), Bounded::default());
        assert_eq!(two[1].delta, [0.5; 4]);
    }

    #[test]
    fn caps_parse_and_print_back() {
        for spec in ["off", "weight=2,norm=1", "weight=3", "norm=1.5"] {
            let caps: MedianCaps = spec.parse().unwrap();
            assert_eq!(caps.to_string(), spec);
        }
        for bad in [
            "",
            "weight=0",
            "norm=0.5",
            "norm=inf",
            "weight=2,x=1",
            "weight",
        ] {
            assert!(bad.parse::<MedianCaps>().is_err(), "{bad}");
        }
    }
}
