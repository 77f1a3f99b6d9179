//! A seconds-long training run that proves burn's autodiff and optimiser work on this
//! machine and backend: bring-up for a new board before any real model is loaded.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use std::time::{Duration, Instant};

/// A one-layer linear regressor.
#[derive(Module, Debug)]
pub struct Regressor {
    linear: Linear,
}

impl Regressor {
    /// A regressor with `inputs` features and one output, randomly initialised.
    pub fn new(inputs: usize, device: &Device) -> Self {
        Self {
            linear: LinearConfig::new(inputs, 1).init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, inputs]`
    /// - output: `[batch, 1]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear.forward(x)
    }
}

/// Loss before and after a smoke training run.
#[derive(Clone, Debug)]
pub struct SmokeReport {
    /// Mean squared error before the first step.
    pub initial_loss: f32,
    /// Mean squared error after the last step.
    pub final_loss: f32,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall time of the training loop.
    pub elapsed: Duration,
}

/// Fits `y = 2 x0 - 3 x1 + 0.5 x2 + 1` on 256 fixed points with Adam for `steps` steps on
/// `device` (which must have autodiff enabled).
pub fn fit_linear(device: &Device, steps: usize) -> SmokeReport {
    const N: usize = 256;
    const D: usize = 3;
    let mut xs = Vec::with_capacity(N * D);
    let mut ys = Vec::with_capacity(N);
    for i in 0..N {
        // Deterministic, well-spread inputs in [-1, 1].
        let row: [f32; D] =
            std::array::from_fn(|j| ((i * (7 + 4 * j) + 3 * j) % 97) as f32 / 48.0 - 1.0);
        ys.push(2.0 * row[0] - 3.0 * row[1] + 0.5 * row[2] + 1.0);
        xs.extend_from_slice(&row);
    }
    let x = Tensor::<2>::from_data(TensorData::new(xs, [N, D]), device);
    let y = Tensor::<2>::from_data(TensorData::new(ys, [N, 1]), device);

    let mut model = Regressor::new(D, device);
    let mut optimizer = AdamConfig::new().init();
    let mse = |model: &Regressor| (model.forward(x.clone()) - y.clone()).powi_scalar(2).mean();
    let initial_loss = mse(&model).into_scalar::<f32>();
    let start = Instant::now();
    for _ in 0..steps {
        let loss = mse(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(0.05, model, grads);
    }
    let elapsed = start.elapsed();
    let final_loss = mse(&model).into_scalar::<f32>();
    SmokeReport {
        initial_loss,
        final_loss,
        steps,
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ComputeBackend;

    fn check(backend: ComputeBackend) {
        let report = fit_linear(&backend.training_device(), 300);
        assert!(
            report.initial_loss > 0.5,
            "{backend}: initial loss {}",
            report.initial_loss
        );
        assert!(
            report.final_loss < report.initial_loss / 100.0,
            "{backend}: loss only fell from {} to {}",
            report.initial_loss,
            report.final_loss
        );
    }

    #[test]
    fn flex_training_reduces_loss_100x() {
        check(ComputeBackend::Flex);
    }

    #[test]
    fn ndarray_training_reduces_loss_100x() {
        check(ComputeBackend::Ndarray);
    }
}
