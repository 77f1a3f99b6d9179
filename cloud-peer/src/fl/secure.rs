//! Secure aggregation in the simulation (`tandem-cloud simulate --secagg ...`): a round's
//! trained updates go through a whole [`tandem_runtime::fl::secagg`] round, every
//! message serialised and counted, and the strategy sees only the opened sum's mean (one
//! update, as with central DP), so robust strategies and per-update refusals are not
//! available. Devices clip their own update to `--clip` before masking (the cloud cannot
//! see one to clip it); the mean is unweighted.

use super::strategy::{ClientUpdate, StrategySpec};
use std::fmt;
use std::str::FromStr;
use tandem_runtime::fl::secagg::{self, SecAggError, Settings, round::Traffic};
use tandem_runtime::rng::SplitMix64;

/// `--secagg bits=B,clip=C[,neighbours=K,threshold=T,drop=F]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SecAggConfig {
    /// Bits per value of the fixed-point updates.
    pub value_bits: u8,
    /// Per-value clipping bound of the fixed point.
    pub clip: f32,
    /// Neighbours per device (`None`: all, classic SecAgg).
    pub neighbours: Option<usize>,
    /// Shares that rebuild a secret, as a share of the neighbours (default: a majority).
    pub threshold: Option<f64>,
    /// Share of each round's devices that vanish after sharing their secrets.
    pub drop: f64,
}

/// A `--secagg` that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "--secagg '{0}': expected bits=B (2..=24),clip=C (> 0)[,neighbours=K (even)][,threshold=T (share of the neighbours, over 0.5 and at most 1)][,drop=F (in [0, 0.5])]"
)]
pub struct SecAggConfigError(String);

impl FromStr for SecAggConfig {
    type Err = SecAggConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SecAggConfigError(s.to_string());
        let mut config = Self {
            value_bits: 0,
            clip: 0.0,
            neighbours: None,
            threshold: None,
            drop: 0.0,
        };
        for part in s.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            let number: f64 = value.parse().map_err(|_| bad())?;
            match key {
                "bits" if (2.0..=24.0).contains(&number) && number.fract() == 0.0 => {
                    config.value_bits = number as u8;
                }
                "clip" if number.is_finite() && number > 0.0 => config.clip = number as f32,
                "neighbours" if number >= 2.0 && number % 2.0 == 0.0 && number <= 254.0 => {
                    config.neighbours = Some(number as usize);
                }
                "threshold" if number > 0.5 && number <= 1.0 => config.threshold = Some(number),
                "drop" if (0.0..=0.5).contains(&number) => config.drop = number,
                _ => return Err(bad()),
            }
        }
        if config.value_bits == 0 || config.clip == 0.0 {
            return Err(bad());
        }
        Ok(config)
    }
}

impl fmt::Display for SecAggConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bits={},clip={}", self.value_bits, self.clip)?;
        if let Some(k) = self.neighbours {
            write!(f, ",neighbours={k}")?;
        }
        if let Some(t) = self.threshold {
            write!(f, ",threshold={t}")?;
        }
        write!(f, ",drop={}", self.drop)
    }
}

impl SecAggConfig {
    /// Refuses a strategy that needs every update apart.
    pub fn check(&self, strategy: &StrategySpec) -> Result<(), String> {
        if !strategy.is_linear() {
            return Err(format!(
                "--secagg opens the sum only: {strategy} needs every update apart (use a mean-based strategy)"
            ));
        }
        Ok(())
    }

    /// The round's protocol settings for `participants` updates of `len` values.
    fn settings(
        &self,
        round: u64,
        participants: usize,
        len: usize,
    ) -> Result<Settings, SecAggError> {
        let neighbours = self
            .neighbours
            .unwrap_or(participants)
            .min(participants.saturating_sub(1));
        let threshold = match self.threshold {
            Some(share) => ((share * neighbours as f64).ceil() as usize).clamp(1, neighbours),
            None => neighbours / 2 + 1,
        };
        Settings::new(
            round,
            participants,
            neighbours,
            threshold,
            len,
            self.clip,
            self.value_bits,
        )
    }
}

/// What a secure round gave the strategy, and its cost.
pub struct SecureRound {
    /// The mean of the surviving updates (one update; its examples are theirs summed).
    pub mean: ClientUpdate,
    /// The updates in the sum (positions in the round's list).
    pub survivors: Vec<usize>,
    /// Updates lost to devices that vanished after sharing.
    pub dropped: usize,
    /// The protocol's bytes and compute.
    pub traffic: Traffic,
}

/// Runs round `round` of secure aggregation over `updates` (the devices' clipped
/// updates), dropping `config.drop` of them after sharing (a draw from `seed`).
pub fn aggregate(
    config: &SecAggConfig,
    updates: &[ClientUpdate],
    round: u64,
    seed: u64,
) -> Result<SecureRound, SecAggError> {
    let n = updates.len();
    let len = updates.first().map_or(0, |u| u.delta.len());
    let settings = config.settings(round, n, len)?;
    let mut rng = SplitMix64::derive(seed ^ 0x5ec_a99, round);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let mut vanished: Vec<usize> = order[..(config.drop * n as f64).round() as usize].to_vec();
    vanished.sort_unstable();
    let deltas: Vec<&[f32]> = updates.iter().map(|u| u.delta.as_slice()).collect();
    let (opened, traffic) = secagg::round::run(settings, &deltas, &vanished, &[], rng.next_u64())?;
    let scale = 1.0 / opened.survivors.len().max(1) as f32;
    Ok(SecureRound {
        mean: ClientUpdate {
            delta: opened.sum.iter().map(|s| s * scale).collect(),
            examples: opened.survivors.iter().map(|&i| updates[i].examples).sum(),
        },
        survivors: opened.survivors,
        dropped: vanished.len(),
        traffic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print_back() {
        let config: SecAggConfig = "bits=16,clip=0.5,neighbours=4,threshold=0.6,drop=0.3"
            .parse()
            .unwrap();
        assert_eq!(config.neighbours, Some(4));
        assert_eq!(config.to_string().parse::<SecAggConfig>(), Ok(config));
        for bad in [
            "bits=16",
            "clip=1",
            "bits=1,clip=1",
            "bits=8,clip=1,drop=0.9",
            "bits=8,clip=1,x=2",
            // A threshold of half the neighbours or fewer opens one device's update.
            "bits=8,clip=1,threshold=0.5",
            "bits=8,clip=1,neighbours=4,threshold=0.3",
        ] {
            assert!(bad.parse::<SecAggConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_mean_of_the_survivors_comes_back() {
        let updates: Vec<ClientUpdate> = (0..6)
            .map(|i| ClientUpdate {
                delta: vec![0.01 * i as f32; 50],
                examples: 10,
            })
            .collect();
        let config: SecAggConfig = "bits=16,clip=0.1,drop=0.34".parse().unwrap();
        let out = aggregate(&config, &updates, 3, 9).unwrap();
        assert_eq!((out.survivors.len(), out.dropped), (4, 2));
        assert_eq!(out.mean.examples, 40);
        // Their mean, to the fixed point's step (0.1 / 32767) per value.
        let want: f32 = out.survivors.iter().map(|&i| 0.01 * i as f32).sum::<f32>() / 4.0;
        assert!(
            out.mean.delta.iter().all(|&v| (v - want).abs() < 1e-5),
            "{want}"
        );
        assert!(out.traffic.masked_bytes > 0);
    }
}
