//! The `fmnist` task: LeNet-5 ([`crate::model::lenet`]) on Fashion-MNIST, trained with
//! SGD + momentum and cross-entropy, pixels scaled to [0, 1] (as Flower's niid-bench).
//! Local training is [`super::local_sgd`]'s (FedProx's proximal step included).

use super::Layout;
use super::local_sgd;
use super::task::{Evaluation, LocalConfig, LocalResult, Task, TaskError};
use crate::data::fashion_mnist::{CLASSES, Images, PIXELS, SIDE};
use crate::model::lenet::{LeNet, LeNetConfig};
use crate::model::params;
use crate::model::{ComputeBackend, with_device_rng};
use burn::nn::loss::CrossEntropyLossConfig;
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
        // A thrown-away initialisation draws from burn's generator too: under its lock,
        // or it can land between another thread's seed and its seeded init.
        let layout = params::layout(&with_device_rng(|| {
            LeNetConfig::new().init(&backend.device())
        }));
        Self { backend, layout }
    }

    fn model(&self, weights: &[f32], device: &Device) -> Result<LeNet, TaskError> {
        if weights.len() != self.layout.len() {
            return Err(TaskError::Layout {
                expected: self.layout.len(),
                got: weights.len(),
            });
        }
        let fresh = with_device_rng(|| LeNetConfig::new().init(device));
        Ok(params::load(fresh, weights))
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
        params::flatten(&with_device_rng(|| {
            device.seed(seed);
            LeNetConfig::new().init(&device)
        }))
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
        let device = self.backend.training_device();
        let model = self.model(global, &device)?;
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let every = |_: &str| true;
        let trained = local_sgd::train(
            model,
            data.len(),
            config,
            seed,
            global,
            &every,
            |model, indices| {
                let (images, labels) = batch(data, indices, &device);
                loss_fn.forward(model.forward(images), labels)
            },
        )?;
        Ok(LocalResult {
            weights: params::flatten(&trained.model),
            examples: data.len() as u64,
            loss: trained.loss,
            steps: trained.steps,
        })
    }

    fn evaluate(&self, weights: &[f32], data: &Images) -> Result<Evaluation, TaskError> {
        let device = self.backend.device();
        let model = self.model(weights, &device)?;
        let all: Vec<usize> = (0..data.len()).collect();
        local_sgd::evaluate(
            &all,
            EVAL_BATCH,
            CLASSES,
            |indices| model.forward(batch(data, indices, &device).0),
            |i| usize::from(data.labels[i]),
        )
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

    /// A step limit (a device's plan under a deadline) stops training early and still
    /// reports every local example (FedAvg's weight); no examples and a zero batch are
    /// refused by the shared loop.
    #[test]
    fn a_step_limit_stops_training_and_keeps_the_example_count() {
        let task = Fmnist::new(ComputeBackend::Flex);
        let images = Images {
            pixels: (0..40 * PIXELS).map(|i| (i % 251) as u8).collect(),
            labels: (0..40).map(|i| (i % 10) as u8).collect(),
        };
        let config = LocalConfig {
            epochs: 2,
            batch: 8,
            lr: 0.01,
            momentum: 0.9,
            proximal_mu: 0.0,
            max_steps: None,
        };
        let global = task.initial_weights(3);
        let full = task.train(&global, &images, &config, 5).unwrap();
        assert_eq!((full.steps, full.examples), (10, 40));
        let limited = LocalConfig {
            max_steps: Some(3),
            ..config
        };
        let short = task.train(&global, &images, &limited, 5).unwrap();
        assert_eq!((short.steps, short.examples), (3, 40));
        assert_ne!(short.weights, full.weights);
        assert!(matches!(
            task.train(&global, &Images::default(), &config, 5),
            Err(TaskError::Empty)
        ));
        let no_batch = LocalConfig { batch: 0, ..config };
        assert!(matches!(
            task.train(&global, &images, &no_batch, 5),
            Err(TaskError::Config(_))
        ));
    }
}
