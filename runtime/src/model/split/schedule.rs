//! Learning rate: linear warm-up, then linear decay to zero (BERT fine-tuning's
//! schedule).

/// `peak * step / warmup` during warm-up, then falling linearly to 0 at `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// Largest learning rate.
    pub peak: f64,
    /// Warm-up steps.
    pub warmup: u64,
    /// Steps of the whole run.
    pub total: u64,
}

impl LrSchedule {
    /// The learning rate of step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        let step = step + 1;
        if step <= self.warmup {
            return self.peak * step as f64 / self.warmup as f64;
        }
        let left = self.total.saturating_sub(step) as f64;
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        self.peak * (left / span).max(0.0) + self.peak * 1e-3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        let s = LrSchedule {
            peak: 1.0,
            warmup: 4,
            total: 10,
        };
        assert_eq!(s.at(0), 0.25);
        assert_eq!(s.at(3), 1.0);
        assert!(s.at(5) < s.at(4) && s.at(4) < 1.0);
        assert!(s.at(9) < 0.01 && s.at(9) > 0.0);
        assert!(s.at(100) > 0.0);
    }
}
