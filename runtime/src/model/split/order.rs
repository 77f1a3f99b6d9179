//! The order a split run visits its training reviews: each epoch a fresh seeded
//! permutation.

/// Which training review the `i`-th pick of a run is: epoch `e` visits every review
/// once, in its own seeded order (epoch 0's is `shuffled(n, seed)`, as before
/// multi-epoch runs).
pub(super) struct TrainingOrder {
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
}

impl TrainingOrder {
    pub(super) fn new(n: usize, seed: u64) -> Self {
        Self {
            seed,
            epoch: 0,
            order: shuffled(n, seed),
        }
    }

    pub(super) fn at(&mut self, pick: u64) -> usize {
        let n = self.order.len() as u64;
        let epoch = pick / n;
        if epoch != self.epoch {
            self.epoch = epoch;
            // Mixed, not added: seed 1's second epoch must not be seed 2's first.
            let seed = self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            self.order = shuffled(n as usize, seed);
        }
        self.order[(pick % n) as usize]
    }
}

/// `0..n` in a seeded random order (Fisher-Yates over xorshift64*).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed | 1;
    for i in (1..n).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        order.swap(i, (r % (i as u64 + 1)) as usize);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::TrainingOrder;

    #[test]
    fn every_epoch_visits_every_review_once_in_an_order_of_its_own() {
        let n = 50;
        let mut order = TrainingOrder::new(n, 1);
        let epochs: Vec<Vec<usize>> = (0..3)
            .map(|e| (0..n as u64).map(|i| order.at(e * n as u64 + i)).collect())
            .collect();
        for epoch in &epochs {
            let mut sorted = epoch.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(epochs[0], epochs[1]);
        assert_ne!(epochs[1], epochs[2]);
        // Seed 2's first epoch is not seed 1's second.
        let mut other = TrainingOrder::new(n, 2);
        let first: Vec<usize> = (0..n as u64).map(|i| other.at(i)).collect();
        assert_ne!(first, epochs[1]);
        // Going back to an earlier pick gives the same review.
        assert_eq!(order.at(3), epochs[0][3]);
    }
}
