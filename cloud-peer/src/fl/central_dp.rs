//! Central differential privacy for federated rounds: DP-FedAvg (McMahan et al. 2018,
//! "Learning Differentially Private Recurrent Language Models"), with the privacy spent
//! tracked by [`RdpAccountant`].
//!
//! Each valid update is clipped to norm `C` (validation's `--clip C`, required), their
//! sum gets Gaussian noise of standard deviation `z C` on every coordinate, and the sum
//! is divided by the number of clients a round samples, fixed in advance (not by the
//! number that reported, which would depend on the data). Example counts are ignored:
//! a weighted mean has no bounded sensitivity. The noised mean goes to the strategy as
//! the round's one update, so FedAvg, FedAvgM and the FedOpt family apply it as they
//! would any mean (post-processing keeps the guarantee); the robust strategies, which
//! need the updates one by one, cannot be combined with it.
//!
//! A simulation draws the noise from its seeded generator (reproducible runs); a
//! networked cloud from the system's secure generator, and it claims no amplification
//! by sampling (its rounds' participants follow a seed the devices could know: `q = 1`).
//! Floating-point Gaussian samples are known to leak through their low bits (Mironov
//! 2012), which this does not defend against yet.

use super::accountant::RdpAccountant;
use super::strategy::{ClientUpdate, StrategySpec};
use std::path::Path;
use tandem_runtime::rng::{SplitMix64, box_muller};
use tandem_runtime::sealed::{self, SealedError};

/// The settings of central DP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpSettings {
    /// Noise standard deviation over the clipping norm (z).
    pub noise_multiplier: f64,
    /// The delta epsilon is reported at.
    pub delta: f64,
    /// Stop before a round that would take epsilon above this.
    pub target_epsilon: Option<f64>,
}

impl DpSettings {
    /// Checks the settings against the rest of the run: the clipping norm `clip` (from
    /// `--clip C:clip`) and the strategy.
    pub fn check(&self, clip: Option<f32>, strategy: &StrategySpec) -> Result<f32, String> {
        if !(self.noise_multiplier > 0.0 && self.noise_multiplier.is_finite()) {
            return Err(format!(
                "--dp-noise {}: the noise multiplier must be positive",
                self.noise_multiplier
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(format!("--dp-delta {}: must be in (0, 1)", self.delta));
        }
        if let Some(e) = self.target_epsilon
            && !(e > 0.0 && e.is_finite())
        {
            return Err(format!("--dp-epsilon {e}: must be positive"));
        }
        check_run(clip, strategy)
    }
}

/// Whether a run can take central DP: a clipping norm (`--clip C`, clip mode) to scale the
/// noise to, and a mean-based strategy; returns the norm.
pub fn check_run(clip: Option<f32>, strategy: &StrategySpec) -> Result<f32, String> {
    let Some(clip) = clip else {
        return Err("--dp-noise needs --clip C (clip mode): the noise is scaled to C".into());
    };
    if !strategy.is_linear() {
        return Err(format!(
            "--dp-noise works with mean-based strategies (fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad), not {strategy}"
        ));
    }
    Ok(clip)
}

/// Central DP over a run: the mechanism and its accountant.
#[derive(Clone, Debug)]
pub struct CentralDp {
    settings: DpSettings,
    clip: f32,
    /// Clients a round samples (the mean's fixed denominator).
    per_round: usize,
    /// The sampling rate `per_round / clients`.
    rate: f64,
    accountant: RdpAccountant,
}

impl CentralDp {
    /// For rounds that sample `per_round` of `clients`, clipping at `clip` (checked by
    /// [`DpSettings::check`]).
    pub fn new(settings: DpSettings, clip: f32, per_round: usize, clients: usize) -> Self {
        Self {
            settings,
            clip,
            per_round,
            rate: per_round as f64 / clients.max(1) as f64,
            accountant: RdpAccountant::new(),
        }
    }

    /// Epsilon spent so far at the settings' delta.
    pub fn epsilon(&self) -> f64 {
        self.accountant.epsilon(self.settings.delta).0
    }

    /// Epsilon after one more round.
    pub fn epsilon_after_next(&self) -> f64 {
        let mut next = self.accountant.clone();
        next.compose(self.rate, self.settings.noise_multiplier, 1);
        next.epsilon(self.settings.delta).0
    }

    /// Whether the next round would take epsilon above the target.
    pub fn next_round_exceeds_target(&self) -> bool {
        self.settings
            .target_epsilon
            .is_some_and(|target| self.epsilon_after_next() > target)
    }

    /// The round's noised mean of `updates` (each already clipped to the norm), as the
    /// strategy's one update; the round is charged to the accountant. `normals` holds one
    /// standard normal sample per coordinate ([`seeded_normals`] in a simulation,
    /// [`secure_normals`] on a network). A round where nobody reported still releases
    /// noise (and is charged).
    pub fn noised_mean(&mut self, updates: &[ClientUpdate], normals: &[f64]) -> ClientUpdate {
        let std = self.settings.noise_multiplier * f64::from(self.clip);
        let scale = 1.0 / self.per_round as f64;
        let mut sum = vec![0.0f64; normals.len()];
        for update in updates {
            for (s, &d) in sum.iter_mut().zip(&update.delta) {
                *s += f64::from(d);
            }
        }
        let delta = sum
            .into_iter()
            .zip(normals)
            .map(|(s, z)| ((s + std * z) * scale) as f32)
            .collect();
        self.accountant
            .compose(self.rate, self.settings.noise_multiplier, 1);
        ClientUpdate { delta, examples: 1 }
    }

    /// Writes the privacy spent into `dir` crash-safely. A networked cloud writes it before
    /// the run's state: a crash between the two charges the redone round twice, never
    /// zero times.
    pub fn save(&self, dir: &Path) -> Result<(), SealedError> {
        sealed::save(&dir.join(ACCOUNT_FILE), ACCOUNT_MAGIC, &self.accountant)
    }

    /// Continues with the privacy spent saved in `dir` (see [`CentralDp::save`]);
    /// `Ok(false)` if there is none; refused if it is not an account
    /// ([`RdpAccountant::is_valid`]).
    pub fn restore(&mut self, dir: &Path) -> Result<bool, SealedError> {
        let path = dir.join(ACCOUNT_FILE);
        let Some(accountant) = sealed::load::<RdpAccountant>(&path, ACCOUNT_MAGIC, 64 << 10)?
        else {
            return Ok(false);
        };
        if !accountant.is_valid() {
            return Err(SealedError::Corrupt {
                path,
                what: "not one finite, non-negative value per tracked order",
            });
        }
        self.accountant = accountant;
        Ok(true)
    }
}

/// The privacy account in a networked run's `--state` directory.
pub const ACCOUNT_FILE: &str = "dp-accountant.bin";
const ACCOUNT_MAGIC: &[u8; 8] = b"TNDMDPA1";

/// `len` standard normal samples from a seeded generator (reproducible simulations).
pub fn seeded_normals(seed: u64, len: usize) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.normal()).collect()
}

/// `len` standard normal samples from the system's secure generator (Box-Muller on
/// 53-bit uniforms); `None` if the generator fails.
pub fn secure_normals(len: usize) -> Option<Vec<f64>> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = vec![0u8; 16 * len.div_ceil(2)];
    SystemRandom::new().fill(&mut bytes).ok()?;
    let uniform = |b: &[u8]| {
        let bits = u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) >> 11;
        bits as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(len + 1);
    for pair in bytes.chunks_exact(16) {
        let (a, b) = box_muller(1.0 - uniform(&pair[..8]), uniform(&pair[8..]));
        out.extend([a, b]);
    }
    out.truncate(len);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(z: f64) -> DpSettings {
        DpSettings {
            noise_multiplier: z,
            delta: 1e-5,
            target_epsilon: Some(5.0),
        }
    }

    /// The noise has the standard deviation `z C / per_round` on every coordinate, around
    /// the sum over the fixed denominator (an independent check: sample moments).
    #[test]
    fn the_noised_mean_has_the_calibrated_noise_around_the_fixed_denominator_mean() {
        let (clip, per_round, len) = (2.0f32, 10, 200_000);
        let mut dp = CentralDp::new(settings(1.5), clip, per_round, 100);
        // Four of the ten sampled report, each delta 0.5 everywhere: the mean over the
        // fixed ten is 0.2, not 0.5.
        let update = ClientUpdate {
            delta: vec![0.5; len],
            examples: 600,
        };
        let noised = dp.noised_mean(&vec![update; 4], &seeded_normals(7, len));
        let n = len as f64;
        let mean = noised.delta.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = noised
            .delta
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let want_std = 1.5 * 2.0 / 10.0;
        assert!(
            (mean - 0.2).abs() < 5.0 * want_std / n.sqrt(),
            "mean {mean}"
        );
        assert!(
            (var.sqrt() / want_std - 1.0).abs() < 0.01,
            "std {} against {want_std}",
            var.sqrt()
        );
        assert_eq!(noised.examples, 1);
    }

    #[test]
    fn each_round_is_charged_and_the_target_stops_the_run() {
        let mut dp = CentralDp::new(settings(0.8), 1.0, 10, 100);
        assert_eq!(dp.epsilon(), 0.0);
        let mut rounds = 0;
        while !dp.next_round_exceeds_target() {
            let before = dp.epsilon();
            dp.noised_mean(&[], &seeded_normals(rounds, 4));
            assert!(dp.epsilon() > before);
            rounds += 1;
            assert!(rounds < 10_000, "the target was never reached");
        }
        assert!(dp.epsilon() <= 5.0 && dp.epsilon_after_next() > 5.0);
        // The accountant alone gives the same epsilon for the same rounds.
        let mut accountant = RdpAccountant::new();
        accountant.compose(0.1, 0.8, rounds);
        assert_eq!(accountant.epsilon(1e-5).0, dp.epsilon());
    }

    /// An account file whose vector is not one value per tracked order (empty, short,
    /// negative or not finite) is refused: an empty one would restore as epsilon 0.
    #[test]
    fn a_damaged_account_is_refused_not_read_as_nothing_spent() {
        #[derive(serde::Serialize)]
        struct Account {
            rdp: Vec<f64>,
        }
        let dir = std::env::temp_dir().join(format!("tandem-dp-account-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut spent = CentralDp::new(settings(1.0), 1.0, 10, 10);
        spent.noised_mean(&[], &seeded_normals(1, 4));
        spent.save(&dir).unwrap();
        let mut restored = CentralDp::new(settings(1.0), 1.0, 10, 10);
        assert!(restored.restore(&dir).unwrap());
        assert_eq!(restored.epsilon(), spent.epsilon());
        let tracked = RdpAccountant::new().orders_tracked();
        for rdp in [
            Vec::new(),
            vec![0.5; tracked - 1],
            vec![0.5; tracked + 1],
            vec![-1.0; tracked],
            vec![f64::NAN; tracked],
        ] {
            let path = dir.join(ACCOUNT_FILE);
            sealed::save(&path, ACCOUNT_MAGIC, &Account { rdp: rdp.clone() }).unwrap();
            let mut dp = CentralDp::new(settings(1.0), 1.0, 10, 10);
            assert!(dp.restore(&dir).is_err(), "{} values restored", rdp.len());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The secure generator's samples are standard normal (sample moments of 200,000).
    #[test]
    fn secure_normals_are_standard_normal() {
        let z = secure_normals(200_001).unwrap();
        assert_eq!(z.len(), 200_001);
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!(
            mean.abs() < 0.015 && (var - 1.0).abs() < 0.02,
            "mean {mean} var {var}"
        );
    }

    #[test]
    fn the_account_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("tandem-dp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut dp = CentralDp::new(settings(1.0), 1.0, 10, 10);
        assert!(!dp.restore(&dir).unwrap());
        dp.noised_mean(&[], &seeded_normals(1, 4));
        dp.noised_mean(&[], &seeded_normals(2, 4));
        dp.save(&dir).unwrap();
        let mut restarted = CentralDp::new(settings(1.0), 1.0, 10, 10);
        assert!(restarted.restore(&dir).unwrap());
        assert_eq!(restarted.epsilon(), dp.epsilon());
        assert!(restarted.epsilon() > 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_that_cannot_hold_are_refused_with_the_flag_to_fix() {
        let fedavg = StrategySpec::default();
        assert_eq!(settings(1.0).check(Some(1.0), &fedavg), Ok(1.0));
        assert!(
            settings(1.0)
                .check(None, &fedavg)
                .unwrap_err()
                .contains("--clip")
        );
        assert!(
            settings(0.0)
                .check(Some(1.0), &fedavg)
                .unwrap_err()
                .contains("--dp-noise")
        );
        let median = settings(1.0).check(Some(1.0), &"median".parse().unwrap());
        assert!(median.unwrap_err().contains("mean-based"));
        let bad_delta = DpSettings {
            delta: 1.0,
            ..settings(1.0)
        };
        assert!(
            bad_delta
                .check(Some(1.0), &fedavg)
                .unwrap_err()
                .contains("--dp-delta")
        );
    }
}
