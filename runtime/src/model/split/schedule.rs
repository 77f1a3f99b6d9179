//! Learning rate: linear warm-up, then linear decay to zero (BERT fine-tuning's
//! schedule), and the optimizer both halves train with.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};

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

/// AdamW (weight decay 0.01) stepping at an [`LrSchedule`]'s rate: the device's bottom
/// and the cloud's top both train with one.
pub(super) struct ScheduledAdamW {
    optimizer: ModuleOptimizer,
    schedule: LrSchedule,
    updates: u64,
}

impl ScheduledAdamW {
    pub(super) fn new(schedule: LrSchedule) -> Self {
        Self {
            optimizer: AdamWConfig::new().with_weight_decay(0.01).init(),
            schedule,
            updates: 0,
        }
    }

    /// Updates taken so far: the schedule's position.
    pub(super) fn updates(&self) -> u64 {
        self.updates
    }

    /// The learning-rate schedule it follows.
    pub(super) fn schedule(&self) -> LrSchedule {
        self.schedule
    }

    /// The optimizer's state (AdamW's moments, keyed by parameter id) as burnpack
    /// bytes.
    pub(super) fn state_bytes(&self) -> Result<burn::tensor::Bytes, String> {
        self.optimizer
            .into_bytes()
            .map_err(|e| format!("optimizer state: {e}"))
    }

    /// An optimizer at `schedule` that continues after `updates` updates with the state
    /// `bytes` ([`Self::state_bytes`]); the module it steps must carry the parameter
    /// ids the state was saved with (burnpack keeps them).
    pub(super) fn restore(
        schedule: LrSchedule,
        updates: u64,
        bytes: Vec<u8>,
    ) -> Result<Self, String> {
        let mut restored = Self::new(schedule);
        restored.optimizer = restored
            .optimizer
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| format!("optimizer state: {e}"))?;
        restored.updates = updates;
        Ok(restored)
    }

    /// One update of `module` by `grads` at the current step's rate. burn's step takes
    /// the module by value: pass a clone (it shares the parameter tensors).
    pub(super) fn step<M: Module>(&mut self, module: M, grads: GradientsParams) -> M {
        let lr = self.schedule.at(self.updates);
        self.updates += 1;
        self.optimizer.step(lr, module, grads)
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
