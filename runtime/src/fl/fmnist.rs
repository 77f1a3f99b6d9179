//! The `fmnist` task: LeNet-5 ([`crate::model::lenet`]) on Fashion-MNIST, trained with
//! SGD + momentum and cross-entropy, pixels scaled to [0, 1] (as Flower's niid-bench).
//!
//! FedProx's proximal term `mu/2 ||w - w_global||^2` enters as its gradient
//! `mu (w - w_global)`, applied after each optimiser step as `w -= lr mu (w - w_global)`
//! (a decoupled proximal step: the same fixed point, without momentum on the term).

use super::Layout;
use super::task::{Evaluation, LocalConfig, LocalResult, Task, TaskError, score_logits};
use crate::data::fashion_mnist::{CLASSES, Images, PIXELS, SIDE};
use crate::model::ComputeBackend;
use crate::model::lenet::{LeNet, LeNetConfig};
use crate::model::params;
use crate::rng::SplitMix64;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Images per evaluation batch.
const EVAL_BATCH: usize = 1000;

/// LeNet-5 on Fashion-MNIST.
pub struct Fmnist {
    backend: ComputeBackend,
    layout: Layout,
}

impl Fmnist {
    /// The task on `backend`.
    pub fn new(backend: ComputeBackend) -> Self {
        let layout = params::layout(&LeNetConfig::new().init(&backend.device()));
        Self { backend, layout }
    }

    fn model(&self, weights: &[f32], device: &Device) -> Result<LeNet, TaskError> {
        if weights.len() != self.layout.len() {
            return Err(TaskError::Layout {
                expected: self.layout.len(),
                got: weights.len(),
            });
        }
        Ok(params::load(LeNetConfig::new().init(device), weights))
    }
}

/// `images`' pixels at `indices` as a `[n, 1, 28, 28]` tensor in [0, 1], and their labels.
fn batch(images: &Images, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let mut pixels = Vec::with_capacity(indices.len() * PIXELS);
    for &i in indices {
        pixels.extend(images.image(i).iter().map(|&p| f32::from(p) / 255.0));
    }
    let labels = indices
        .iter()
        .map(|&i| i64::from(images.labels[i]))
        .collect();
    (
        Tensor::<4>::from_data(
            TensorData::new(pixels, [indices.len(), 1, SIDE, SIDE]),
            device,
        ),
        Tensor::<1, Int>::from_data(TensorData::new(labels, [indices.len()]), device),
    )
}

impl Task for Fmnist {
    type Data = Images;

    fn name(&self) -> &'static str {
        "fmnist"
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn initial_weights(&self, seed: u64) -> Vec<f32> {
        let device = self.backend.device();
        device.seed(seed);
        params::flatten(&LeNetConfig::new().init(&device))
    }

    fn examples(&self, data: &Images) -> u64 {
        data.len() as u64
    }

    fn train(
        &self,
        global: &[f32],
        data: &Images,
        config: &LocalConfig,
        seed: u64,
    ) -> Result<LocalResult, TaskError> {
        if data.is_empty() {
            return Err(TaskError::Empty);
        }
        config.check()?;
        let device = self.backend.training_device();
        let mut model = self.model(global, &device)?;
        let mut optimizer = SgdConfig::new()
            .with_momentum((config.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(f64::from(config.momentum))
                    .with_dampening(0.0)
            }))
            .init();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let mut rng = SplitMix64::new(seed);
        let mut order: Vec<usize> = (0..data.len()).collect();
        let (mut steps, mut loss_sum) = (0u64, 0.0f64);
        for _ in 0..config.epochs {
            rng.shuffle(&mut order);
            for indices in order.chunks(usize::from(config.batch)) {
                let (images, labels) = batch(data, indices, &device);
                let loss = loss_fn.forward(model.forward(images), labels);
                let value: f32 = loss.clone().into_scalar();
                if !value.is_finite() {
                    return Err(TaskError::Diverged { step: steps });
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optimizer.step(f64::from(config.lr), model, grads);
                if config.proximal_mu > 0.0 {
                    let pull = config.lr * config.proximal_mu;
                    let mut w = params::flatten(&model);
                    for (w, g) in w.iter_mut().zip(global) {
                        *w -= pull * (*w - g);
                    }
                    model = params::load(model, &w);
                }
                steps += 1;
                loss_sum += f64::from(value);
            }
        }
        Ok(LocalResult {
            weights: params::flatten(&model),
            examples: data.len() as u64,
            loss: (loss_sum / steps as f64) as f32,
            steps,
        })
    }

    fn evaluate(&self, weights: &[f32], data: &Images) -> Result<Evaluation, TaskError> {
        if data.is_empty() {
            return Err(TaskError::Empty);
        }
        let device = self.backend.device();
        let model = self.model(weights, &device)?;
        let (mut correct, mut loss_sum) = (0u64, 0.0f64);
        let all: Vec<usize> = (0..data.len()).collect();
        for indices in all.chunks(EVAL_BATCH) {
            let (images, _) = batch(data, indices, &device);
            let logits: Vec<f32> = model
                .forward(images)
                .into_data()
                .try_to_vec()
                .map_err(|e| TaskError::Config(format!("logits: {e:?}")))?;
            let labels: Vec<usize> = indices
                .iter()
                .map(|&i| usize::from(data.labels[i]))
                .collect();
            let (c, l) = score_logits(&logits, CLASSES, &labels);
            correct += c;
            loss_sum += l;
        }
        Ok(Evaluation {
            accuracy: correct as f64 / data.len() as f64,
            loss: loss_sum / data.len() as f64,
            examples: data.len() as u64,
        })
    }

    fn pool(&self, parts: &[Images], order: &[(usize, usize)]) -> Images {
        let mut out = Images {
            pixels: Vec::with_capacity(order.len() * PIXELS),
            labels: Vec::with_capacity(order.len()),
        };
        for &(part, i) in order {
            out.pixels.extend_from_slice(parts[part].image(i));
            out.labels.push(parts[part].labels[i]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_layout_is_the_one_known_without_burn() {
        let task = Fmnist::new(ComputeBackend::Flex);
        assert_eq!(task.layout(), &Layout::lenet5());
    }
}
