//! What every task's local training and evaluation share: SGD with momentum over a
//! seeded shuffle, epoch by epoch, FedProx's proximal step, a stop on a non-finite loss;
//! and evaluation batch by batch.
//!
//! FedProx's proximal term `mu/2 ||w - w_global||^2` enters as its gradient
//! `mu (w - w_global)`, applied after each optimiser step as `w -= lr mu (w - w_global)`
//! (a decoupled proximal step: the same fixed point, without momentum on the term).

use super::task::{Evaluation, LocalConfig, TaskError};
use crate::model::params::{self, PathFilter};
use crate::rng::SplitMix64;
use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::Tensor;

/// A locally trained model.
pub(super) struct Trained<M> {
    pub model: M,
    pub steps: u64,
    /// Mean training loss over the steps.
    pub loss: f32,
}

/// Trains `model` on `examples` examples as `config` says (its epochs, or its
/// `max_steps` first), batches in a shuffle from `seed`; `loss_of` gives a batch's (the
/// example indices') loss. The proximal step pulls the parameters `trainable` passes
/// towards `global` (laid out as they are). Refuses no examples and settings no device
/// can train with.
pub(super) fn train<M: Module>(
    mut model: M,
    examples: usize,
    config: &LocalConfig,
    seed: u64,
    global: &[f32],
    trainable: PathFilter,
    mut loss_of: impl FnMut(&M, &[usize]) -> Tensor<1>,
) -> Result<Trained<M>, TaskError> {
    if examples == 0 {
        return Err(TaskError::Empty);
    }
    config.check()?;
    let mut optimizer = SgdConfig::new()
        .with_momentum((config.momentum > 0.0).then(|| {
            MomentumConfig::new()
                .with_momentum(f64::from(config.momentum))
                .with_dampening(0.0)
        }))
        .init();
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..examples).collect();
    let (mut steps, mut loss_sum) = (0u64, 0.0f64);
    let max_steps = config.max_steps.unwrap_or(u64::MAX);
    'epochs: for _ in 0..config.epochs {
        rng.shuffle(&mut order);
        for indices in order.chunks(usize::from(config.batch)) {
            if steps == max_steps {
                break 'epochs;
            }
            let loss = loss_of(&model, indices);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TaskError::Diverged { step: steps });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(f64::from(config.lr), model, grads);
            if config.proximal_mu > 0.0 {
                let pull = config.lr * config.proximal_mu;
                let mut w = params::flatten_where(&model, trainable);
                for (w, g) in w.iter_mut().zip(global) {
                    *w -= pull * (*w - g);
                }
                model = params::load_where(model, &w, trainable);
            }
            steps += 1;
            loss_sum += f64::from(value);
        }
    }
    Ok(Trained {
        model,
        steps,
        loss: (loss_sum / steps.max(1) as f64) as f32,
    })
}

/// Accuracy and mean cross-entropy over the examples of `order`, `batch` at a time:
/// `logits_of` gives a batch's logits (`classes` per example), `label` an example's.
pub(super) fn evaluate(
    order: &[usize],
    batch: usize,
    classes: usize,
    mut logits_of: impl FnMut(&[usize]) -> Tensor<2>,
    label: impl Fn(usize) -> usize,
) -> Result<Evaluation, TaskError> {
    if order.is_empty() {
        return Err(TaskError::Empty);
    }
    let (mut correct, mut loss_sum) = (0u64, 0.0f64);
    for indices in order.chunks(batch) {
        let logits: Vec<f32> = logits_of(indices)
            .into_data()
            .try_to_vec()
            .map_err(|e| TaskError::Config(format!("logits: {e:?}")))?;
        let labels: Vec<usize> = indices.iter().map(|&i| label(i)).collect();
        let (c, l) = score_logits(&logits, classes, &labels);
        correct += c;
        loss_sum += l;
    }
    let n = order.len() as f64;
    Ok(Evaluation {
        accuracy: correct as f64 / n,
        loss: loss_sum / n,
        examples: order.len() as u64,
    })
}

/// Correct answers and the summed cross-entropy of `logits` (`labels.len()` rows of
/// `classes`) against `labels`: what evaluations add up.
fn score_logits(logits: &[f32], classes: usize, labels: &[usize]) -> (u64, f64) {
    let (mut correct, mut loss_sum) = (0u64, 0.0f64);
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let (best, max) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |b, (c, &v)| if v > b.1 { (c, v) } else { b },
            );
        correct += u64::from(best == label);
        let log_sum: f64 = row
            .iter()
            .map(|&v| f64::from(v - max).exp())
            .sum::<f64>()
            .ln();
        loss_sum += log_sum - f64::from(row[label] - max);
    }
    (correct, loss_sum)
}
