//! A small deterministic random number generator (SplitMix64) for everything that must be
//! reproducible from a seed across machines and architectures: data partitions, client
//! sampling, shuffles. Not for cryptography.

/// SplitMix64 (Steele, Lea and Flood 2014): 64 bits of state, passes BigCrush, and the
/// same sequence on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for the `stream`-th independent use of `seed` (e.g. one per client).
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut mixer = Self::new(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Self::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`0 < n < 2^32`), by Lemire's multiply-shift of 32 random bits:
    /// each value's probability is off by at most `n / 2^32` (1e-5 for a million), which
    /// shuffles and sampling here can bear.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A standard normal sample (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        box_muller(u1, u2).0
    }

    /// A Gamma(`shape`, 1) sample, `shape > 0` (Marsaglia and Tsang 2000; for shape < 1
    /// the boost `G(a) = G(a + 1) U^(1/a)`).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.next_f64();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.next_f64();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// A sample of the symmetric Dirichlet(`alpha`) distribution over `n` outcomes.
    pub fn dirichlet(&mut self, alpha: f64, n: usize) -> Vec<f64> {
        let mut p: Vec<f64> = (0..n).map(|_| self.gamma(alpha)).collect();
        let sum: f64 = p.iter().sum();
        if sum > 0.0 {
            p.iter_mut().for_each(|x| *x /= sum);
        } else {
            p.iter_mut().for_each(|x| *x = 1.0 / n as f64);
        }
        p
    }
}

/// Two independent standard normal samples from two uniforms, `u1` in (0, 1] and `u2` in
/// [0, 1) (Box-Muller).
pub fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let radius = (-2.0 * u1.ln()).sqrt();
    let angle = std::f64::consts::TAU * u2;
    (radius * angle.cos(), radius * angle.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_splitmix64_sequence() {
        // First outputs for seed 1234567 from the reference C implementation
        // (prng.di.unimi.it/splitmix64.c).
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn shuffles_are_permutations_and_samples_have_their_moments() {
        let mut rng = SplitMix64::new(7);
        let mut v: Vec<u32> = (0..1000).collect();
        rng.shuffle(&mut v);
        assert_ne!(v, (0..1000).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());

        let n = 20_000;
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        let normals: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let var = mean(&normals.iter().map(|x| x * x).collect::<Vec<_>>());
        assert!(mean(&normals).abs() < 0.03 && (var - 1.0).abs() < 0.05);
        // Gamma(a, 1) has mean a.
        for a in [0.3, 1.0, 4.0] {
            let g: Vec<f64> = (0..n).map(|_| rng.gamma(a)).collect();
            assert!((mean(&g) - a).abs() < 0.05 * a.max(1.0), "gamma({a})");
        }
        let p = rng.dirichlet(0.5, 10);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p.iter().all(|&x| x >= 0.0));
        for _ in 0..1000 {
            assert!(rng.below(3) < 3);
        }
    }
}
