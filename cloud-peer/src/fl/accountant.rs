//! Rényi differential privacy (RDP) accounting of the sampled Gaussian mechanism, the
//! mechanism of DP-FedAvg (McMahan et al. 2018): each round samples clients with
//! probability `q`, clips each update to norm `C` and adds Gaussian noise of standard
//! deviation `z C` to their sum (`z`: the noise multiplier).
//!
//! - RDP of one round at integer order `a >= 2` (Mironov, Talwar and Zhang 2019, "Rényi
//!   Differential Privacy of the Sampled Gaussian Mechanism", section 3.3):
//!   `log(sum_k C(a, k) (1 - q)^(a - k) q^k exp((k^2 - k) / (2 z^2))) / (a - 1)`,
//!   summed in log space.
//! - Rounds compose by adding their RDP order by order.
//! - `(epsilon, delta)` from RDP (Canonne, Kamath and Steinke 2020, Proposition 12, the
//!   conversion of Google's `dp_accounting` and Opacus):
//!   `min_a rdp(a) + log((a - 1) / a) - (log delta + log a) / (a - 1)`.
//!
//! Only integer orders are tracked (2 to 64, 128, 256, 512): the epsilon is at most a few
//! percent above what fractional orders below 2 would add for small epsilons, and never
//! below the true bound. The analysis assumes Poisson sampling with rate `q`; the
//! simulation samples exactly `q N` clients without replacement and uses the same `q`,
//! as TensorFlow Federated's DP-FedAvg does (an approximation, said where it is used).

/// The orders tracked.
fn orders() -> impl Iterator<Item = u32> {
    (2..=64).chain([128, 256, 512])
}

/// An accountant: the RDP spent so far at each order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RdpAccountant {
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self {
            rdp: orders().map(|_| 0.0).collect(),
        }
    }
}

impl RdpAccountant {
    /// Nothing spent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Orders tracked: the length of a valid account's vector.
    pub fn orders_tracked(&self) -> usize {
        orders().count()
    }

    /// Whether this account could have been made by [`RdpAccountant::compose`]: one
    /// finite, non-negative value per tracked order (a damaged or hand-made file is not
    /// read as less spent).
    pub fn is_valid(&self) -> bool {
        self.rdp.len() == self.orders_tracked()
            && self.rdp.iter().all(|r| r.is_finite() && *r >= 0.0)
    }

    /// Adds `rounds` rounds of the sampled Gaussian mechanism with sampling rate `q`
    /// (in `[0, 1]`) and noise multiplier `z` (positive).
    ///
    /// # Panics
    /// If `q` or `z` is out of range (the callers check their flags).
    pub fn compose(&mut self, q: f64, z: f64, rounds: u64) {
        assert!((0.0..=1.0).contains(&q), "sampling rate {q} outside [0, 1]");
        assert!(
            z > 0.0 && z.is_finite(),
            "noise multiplier {z} is not positive"
        );
        for (spent, order) in self.rdp.iter_mut().zip(orders()) {
            *spent += rounds as f64 * sampled_gaussian_rdp(q, z, order);
        }
    }

    /// The smallest epsilon such that everything composed so far is `(epsilon, delta)`-
    /// differentially private, and the order that gives it.
    ///
    /// # Panics
    /// If `delta` is not in `(0, 1)`.
    pub fn epsilon(&self, delta: f64) -> (f64, u32) {
        assert!(delta > 0.0 && delta < 1.0, "delta {delta} outside (0, 1)");
        if self.rdp.iter().all(|&r| r == 0.0) {
            // Nothing released (the conversion alone would say a small positive number).
            return (0.0, orders().next().unwrap_or(2));
        }
        self.rdp
            .iter()
            .zip(orders())
            .map(|(&rdp, order)| {
                let a = f64::from(order);
                let eps = rdp + ((a - 1.0) / a).ln() - (delta.ln() + a.ln()) / (a - 1.0);
                (eps.max(0.0), order)
            })
            .fold(
                (f64::INFINITY, 0),
                |best, e| if e.0 < best.0 { e } else { best },
            )
    }
}

/// The smallest noise multiplier (to 0.1%) at which `rounds` rounds at sampling rate `q`
/// stay within `(target, delta)`; `None` if even a multiplier of 1,000 does not.
pub fn calibrate_noise(q: f64, rounds: u64, delta: f64, target: f64) -> Option<f64> {
    let epsilon = |z: f64| {
        let mut a = RdpAccountant::new();
        a.compose(q, z, rounds);
        a.epsilon(delta).0
    };
    let (mut low, mut high) = (1e-3, 1e3);
    if epsilon(high) > target {
        return None;
    }
    // Epsilon falls as the noise grows: bisect in log space.
    while high / low > 1.001 {
        let mid = (low * high).sqrt();
        if epsilon(mid) > target {
            low = mid;
        } else {
            high = mid;
        }
    }
    Some(high)
}

/// RDP of one round at integer `order` (see the module's documentation).
fn sampled_gaussian_rdp(q: f64, z: f64, order: u32) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    let a = f64::from(order);
    if q == 1.0 {
        // The Gaussian mechanism itself.
        return a / (2.0 * z * z);
    }
    let (log_q, log_1q) = (q.ln(), (-q).ln_1p());
    // log C(a, k), updated term by term.
    let mut log_binomial = 0.0;
    let mut terms = Vec::with_capacity(order as usize + 1);
    for k in 0..=order {
        if k > 0 {
            log_binomial += (a - f64::from(k) + 1.0).ln() - f64::from(k).ln();
        }
        let k = f64::from(k);
        terms.push(log_binomial + (a - k) * log_1q + k * log_q + (k * k - k) / (2.0 * z * z));
    }
    log_sum_exp(&terms) / (a - 1.0)
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Gaussian mechanism (q = 1): RDP a / (2 z^2) at every order, so T rounds are one
    /// round with noise z / sqrt(T).
    #[test]
    fn unsampled_rounds_compose_as_the_gaussian_mechanism() {
        let mut many = RdpAccountant::new();
        many.compose(1.0, 4.0, 16);
        let mut one = RdpAccountant::new();
        one.compose(1.0, 1.0, 1);
        let (a, b) = (many.epsilon(1e-5), one.epsilon(1e-5));
        assert!((a.0 - b.0).abs() < 1e-12 && a.1 == b.1, "{a:?} vs {b:?}");
    }

    /// At q = 1 the binomial sum must reduce to the closed form: check the summation path
    /// with q just below 1 against it.
    #[test]
    fn the_binomial_sum_tends_to_the_closed_form_as_q_tends_to_one() {
        for order in [2, 8, 64] {
            let sum = sampled_gaussian_rdp(1.0 - 1e-12, 1.3, order);
            let closed = sampled_gaussian_rdp(1.0, 1.3, order);
            assert!(
                (sum - closed).abs() < 1e-6 * closed,
                "order {order}: {sum} vs {closed}"
            );
        }
    }

    /// Values of Google's `dp_accounting` 0.6.0 (PyPI; `RdpAccountant` with the same orders,
    /// `PoissonSampledDpEvent(q, GaussianDpEvent(z))` composed `T` times,
    /// `get_epsilon(delta)`), an independent implementation: `bench/dp/reference_epsilons.py`.
    #[test]
    fn matches_google_dp_accounting() {
        for &(q, z, rounds, delta, expected) in REFERENCE {
            let mut accountant = RdpAccountant::new();
            accountant.compose(q, z, rounds);
            let (eps, _) = accountant.epsilon(delta);
            assert!(
                (eps - expected).abs() <= 1e-6 * expected.max(1.0),
                "q {q} z {z} T {rounds} delta {delta}: {eps} against dp_accounting's {expected}"
            );
        }
    }

    /// `(q, z, rounds, delta, epsilon)` from `dp_accounting` (see above).
    const REFERENCE: &[(f64, f64, u64, f64, f64)] = &[
        (0.1, 1.0, 50, 1e-5, 6.0214919768356925),
        (0.1, 0.8, 100, 1e-5, 13.828010209476963),
        (0.01, 1.1, 1000, 1e-5, 1.7252908180449444),
        (0.5, 2.0, 10, 1e-6, 4.944426122294663),
        (1.0, 5.0, 20, 1e-5, 4.161911642354481),
        (0.05, 0.6, 300, 1e-5, 21.23099098643023),
        (0.1, 4.0, 50, 1e-5, 0.7576790645288545),
    ];

    #[test]
    fn calibrated_noise_just_meets_the_target() {
        for target in [1.0, 4.0, 8.0] {
            let z = calibrate_noise(0.1, 50, 1e-5, target).unwrap();
            let spent = |z: f64| {
                let mut a = RdpAccountant::new();
                a.compose(0.1, z, 50);
                a.epsilon(1e-5).0
            };
            assert!(
                spent(z) <= target && spent(z / 1.01) > target,
                "{target}: z {z}"
            );
        }
        assert_eq!(calibrate_noise(1.0, 1_000_000, 1e-5, 1e-6), None);
    }

    #[test]
    fn more_noise_fewer_rounds_or_rarer_sampling_spend_less() {
        let eps = |q: f64, z: f64, t: u64| {
            let mut a = RdpAccountant::new();
            a.compose(q, z, t);
            a.epsilon(1e-5).0
        };
        let base = eps(0.1, 1.0, 50);
        assert!(eps(0.1, 2.0, 50) < base);
        assert!(eps(0.1, 1.0, 10) < base);
        assert!(eps(0.01, 1.0, 50) < base);
        assert_eq!(eps(0.0, 1.0, 50), 0.0);
    }
}
