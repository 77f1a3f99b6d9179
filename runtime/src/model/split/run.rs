//! A whole split fine-tuning run over a [`DeviceLink`]: training steps, periodic dev
//! evaluation, the final test accuracy, and a record of every step's bytes and times.

use super::device::{CLASSES, DeviceError, DeviceTrainer};
use super::order::TrainingOrder;
pub use super::position::RunPosition;
use super::position::checkpoint_due;
use crate::codec::{self, Shape};
use crate::data::rotten_tomatoes::{Review, RottenTomatoes};
use crate::model::minilm::{ModelError, TextTokenizer};
use crate::session::split::SplitDevice;
use crate::transport::TransportError;
use crate::transport::link::{DeviceLink, LinkError};
use crate::wire::{self, CodecDesc};
use serde::Serialize;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long a run is and how often it evaluates.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    /// Training steps (of the trainer's batch size, [`DeviceTrainer::batch_size`]).
    pub steps: u64,
    /// Evaluate on dev every this many steps (and after the last).
    pub eval_every: u64,
    /// Dev reviews per evaluation (the first ones; 0: all).
    pub dev_limit: usize,
    /// Held-out reviews for the final number (the first ones; 0: all).
    pub test_limit: usize,
    /// What the final number is measured on.
    pub held_out: HeldOut,
    /// Shuffles the training order (each epoch anew).
    pub seed: u64,
    /// The first step to train (a resumed run's checkpoint step; 0 for a new run).
    pub start_step: u64,
    /// Checkpoint whenever this many steps are done, and after the last (0: only
    /// after the last).
    pub checkpoint_every: u64,
    /// Frozen bottom: send a review's code once and its id afterwards (the cloud keeps
    /// the codes it says it kept).
    pub cache_codes: bool,
}

/// The reviews of a run's final evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HeldOut {
    /// The test split (969 reviews).
    #[default]
    Test,
    /// Dev and test together (2,531 reviews): about half the sampling noise of test
    /// alone, for comparing runs (no run selects anything on dev, so it is held out as
    /// test is).
    DevAndTest,
}

/// One training step.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// Step number, from 0.
    pub step: u64,
    /// The cloud's batch loss.
    pub loss: f32,
    /// Real tokens in the batch.
    pub tokens: usize,
    /// Device -> cloud bytes (frames and tensor).
    pub up_bytes: usize,
    /// Cloud -> device bytes.
    pub down_bytes: usize,
    /// f32 hidden states of the batch's tokens over the tensor bytes sent.
    pub ratio: f64,
    /// Relative error of the encoded cut tensor.
    pub rel_error: f64,
    /// Sent as review ids only: the cloud had the codes.
    pub cached: bool,
    /// Bottom forward, ms.
    pub compute_ms: f64,
    /// Encoding, ms.
    pub encode_ms: f64,
    /// From sending the step to its reply (network and cloud), ms.
    pub round_trip_ms: f64,
    /// Decoding the gradient and the bottom's backward and optimizer step, ms.
    pub backward_ms: f64,
}

/// One evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRecord {
    /// Training steps done before it.
    pub step: u64,
    /// Mean loss.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Reviews evaluated.
    pub examples: usize,
    /// Device -> cloud bytes of training steps so far.
    pub up_bytes: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The run's settings.
    pub config: RunConfig,
    /// Every training step.
    pub steps: Vec<StepRecord>,
    /// Dev evaluations.
    pub dev: Vec<EvalRecord>,
    /// The final evaluation, on `config.held_out`.
    pub test: EvalRecord,
}

/// What the caller hears while the run goes on.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunEvent<'a> {
    /// A training step finished.
    Step(&'a StepRecord),
    /// A dev evaluation finished.
    Dev(&'a EvalRecord),
    /// Training is over; `examples` test reviews are being evaluated.
    Testing {
        /// Reviews.
        examples: usize,
    },
    /// The cloud could not resume the run where the device was ([`run_reloading`]): the
    /// device went back to its checkpoint at `step` and goes on from there.
    Reloaded {
        /// The step the checkpoint holds, where training goes on.
        step: u64,
        /// The cloud's reason.
        reason: &'a str,
    },
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The device half failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The link to the cloud failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The cloud's loss was not finite: training diverged.
    #[error("loss is {loss} at step {step}: training diverged; the last good checkpoint is kept")]
    NonFiniteLoss {
        /// The step.
        step: u64,
        /// The loss.
        loss: f32,
    },
    /// The run has no data to train or evaluate on.
    #[error("{0}")]
    Data(String),
}

impl From<ModelError> for RunError {
    fn from(err: ModelError) -> Self {
        Self::Device(err.into())
    }
}

/// [`run`], going back to the device's checkpoint whenever the cloud cannot resume the
/// run at the step the device reached (it restarted past its last snapshot of the top):
/// `reload(trainer)` restores `trainer` from its checkpoint and returns where that puts
/// the run (`None`: no checkpoint, and the refusal stands); the device says Hello again
/// as a new process at that step, and trains on from there, as a process restarted with
/// `--resume` would. The report covers the steps since the last reload.
#[allow(clippy::too_many_arguments)]
pub async fn run_reloading(
    link: &mut DeviceLink,
    trainer: &mut DeviceTrainer,
    tokenizer: &TextTokenizer,
    data: &RottenTomatoes,
    mut config: RunConfig,
    mut on_event: impl FnMut(RunEvent<'_>),
    mut on_checkpoint: impl FnMut(&DeviceTrainer, u64) -> Result<(), RunError>,
    mut reload: impl FnMut(&mut DeviceTrainer) -> Result<Option<RunPosition>, RunError>,
) -> Result<RunReport, RunError> {
    loop {
        let ran = run(
            link,
            trainer,
            tokenizer,
            data,
            config.clone(),
            &mut on_event,
            &mut on_checkpoint,
        )
        .await;
        let reason = match ran {
            Err(RunError::Link(LinkError::Refused(TransportError::ResumeRefused(reason)))) => {
                reason
            }
            other => return other,
        };
        let Some(position) = reload(trainer)? else {
            return Err(LinkError::Refused(TransportError::ResumeRefused(reason)).into());
        };
        tracing::warn!(
            step = position.start_step,
            "the cloud cannot resume the run here ({reason}): went back to the checkpoint"
        );
        on_event(RunEvent::Reloaded {
            step: position.start_step,
            reason: &reason,
        });
        link.resume_at(position.process, position.start_step)
            .await?;
        config.start_step = position.start_step;
    }
}

/// Runs training steps `config.start_step..config.steps` of `trainer` with the cloud
/// behind `link`. `on_event` sees every step and evaluation; `on_checkpoint(trainer,
/// steps_done)` runs every `config.checkpoint_every` steps and after the last (where the
/// caller writes its checkpoint, so a later failure keeps it).
pub async fn run(
    link: &mut DeviceLink,
    trainer: &mut DeviceTrainer,
    tokenizer: &TextTokenizer,
    data: &RottenTomatoes,
    config: RunConfig,
    mut on_event: impl FnMut(RunEvent<'_>),
    mut on_checkpoint: impl FnMut(&DeviceTrainer, u64) -> Result<(), RunError>,
) -> Result<RunReport, RunError> {
    if data.train.is_empty() || data.test.is_empty() || trainer.batch_size() == 0 {
        return Err(RunError::Data(
            "no training or test reviews, or a batch size of 0".into(),
        ));
    }
    if config.cache_codes && !trainer.frozen() {
        return Err(RunError::Data(
            "caching codes needs a frozen bottom: a trained bottom's code of a review changes every step".into(),
        ));
    }
    // Reviews whose codes the cloud kept (`None`: no caching).
    let mut kept: Option<HashSet<u32>> = config.cache_codes.then(HashSet::new);
    let mut machine = SplitDevice::new(Default::default(), 0);
    let mut order = TrainingOrder::new(data.train.len(), config.seed);
    let batch_size = trainer.batch_size();
    let mut steps = Vec::new();
    let mut dev = Vec::new();
    let mut up_total = 0u64;
    for step in config.start_step..config.steps {
        let ids: Vec<u32> = (0..batch_size)
            .map(|i| order.at(step * batch_size as u64 + i as u64) as u32)
            .collect();
        let picks: Vec<&Review> = ids.iter().map(|&i| &data.train[i as usize]).collect();
        let record = train_step(
            link,
            &mut machine,
            trainer,
            tokenizer,
            (&picks, &ids),
            &mut kept,
            step,
        )
        .await?;
        up_total += record.up_bytes as u64;
        on_event(RunEvent::Step(&record));
        steps.push(record);
        let done = step + 1;
        if done % config.eval_every.max(1) == 0 || done == config.steps {
            let reviews = limit(&data.dev, config.dev_limit);
            let eval = evaluate(
                link,
                &mut machine,
                trainer,
                tokenizer,
                reviews,
                done,
                up_total,
            )
            .await?;
            on_event(RunEvent::Dev(&eval));
            dev.push(eval);
        }
        if checkpoint_due(done, config.checkpoint_every, config.steps) {
            on_checkpoint(trainer, done)?;
        }
    }
    let held_out: Vec<Review> = match config.held_out {
        HeldOut::Test => data.test.clone(),
        HeldOut::DevAndTest => data.dev.iter().chain(&data.test).cloned().collect(),
    };
    let reviews = limit(&held_out, config.test_limit);
    on_event(RunEvent::Testing {
        examples: reviews.len(),
    });
    let test = evaluate(
        link,
        &mut machine,
        trainer,
        tokenizer,
        reviews,
        config.steps,
        up_total,
    )
    .await?;
    Ok(RunReport {
        config,
        steps,
        dev,
        test,
    })
}

/// One training step of `reviews` (with their training-set ids); `kept` holds the ids
/// whose codes the cloud kept (`None`: no caching).
async fn train_step(
    link: &mut DeviceLink,
    machine: &mut SplitDevice,
    trainer: &mut DeviceTrainer,
    tokenizer: &TextTokenizer,
    (reviews, ids): (&[&Review], &[u32]),
    kept: &mut Option<HashSet<u32>>,
    step: u64,
) -> Result<StepRecord, RunError> {
    let texts: Vec<&str> = reviews.iter().map(|r| r.text.as_str()).collect();
    let labels: Vec<u32> = reviews.iter().map(|r| r.label).collect();
    let batch = tokenizer.batch(&texts)?;
    let cached = kept
        .as_ref()
        .is_some_and(|k| ids.iter().all(|id| k.contains(id)));
    let forward = if cached {
        trainer.cached(&batch, &labels, ids)
    } else {
        let ask = if kept.is_some() { ids } else { &[] };
        trainer.forward(&batch, &labels, ask, true)?
    };
    let up_bytes = wire_bytes(&forward.activations, forward.tensor.len())?;
    // `step` steps are trained before this one: what a reconnect's Hello says.
    link.trained(step);
    let sent = Instant::now();
    let (gradient, tensor) = link
        .split_step(machine, forward.activations, forward.tensor)
        .await?;
    let round_trip = sent.elapsed();
    let down_bytes = wire_bytes(&gradient, tensor.len())?;
    if !gradient.loss.is_finite() {
        return Err(RunError::NonFiniteLoss {
            step,
            loss: gradient.loss,
        });
    }
    if gradient.kept
        && let Some(kept) = kept
    {
        kept.extend(ids);
    }
    let started = Instant::now();
    trainer.apply_gradient(&gradient, &tensor)?;
    let tokens = batch.tokens();
    Ok(StepRecord {
        step,
        loss: gradient.loss,
        tokens,
        up_bytes,
        down_bytes,
        ratio: (tokens * trainer.hidden() * 4) as f64 / forward.report.bytes.max(1) as f64,
        rel_error: forward.report.rel_error,
        cached,
        compute_ms: ms(forward.compute),
        encode_ms: ms(forward.encode),
        round_trip_ms: ms(round_trip),
        backward_ms: ms(started.elapsed()),
    })
}

/// Accuracy and mean loss over `reviews` after `step` training steps (`up_bytes` sent):
/// evaluation batches answered with logits.
#[allow(clippy::too_many_arguments)]
async fn evaluate(
    link: &mut DeviceLink,
    machine: &mut SplitDevice,
    trainer: &mut DeviceTrainer,
    tokenizer: &TextTokenizer,
    reviews: &[Review],
    step: u64,
    up_bytes: u64,
) -> Result<EvalRecord, RunError> {
    let (mut correct, mut loss_sum) = (0usize, 0.0f64);
    link.trained(step);
    for chunk in reviews.chunks(trainer.batch_size()) {
        let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
        let labels: Vec<u32> = chunk.iter().map(|r| r.label).collect();
        let batch = tokenizer.batch(&texts)?;
        let forward = trainer.forward(&batch, &labels, &[], false)?;
        let (reply, tensor) = link
            .split_step(machine, forward.activations, forward.tensor)
            .await?;
        let logits = codec::decode(
            CodecDesc::Identity,
            Shape::new(chunk.len(), CLASSES),
            &tensor,
        )
        .map_err(DeviceError::from)?;
        correct += logits
            .chunks(CLASSES)
            .zip(&labels)
            .filter(|(row, label)| u32::from(row[1] > row[0]) == **label)
            .count();
        loss_sum += f64::from(reply.loss) * chunk.len() as f64;
    }
    let n = reviews.len().max(1) as f64;
    Ok(EvalRecord {
        step,
        loss: loss_sum / n,
        accuracy: correct as f64 / n,
        examples: reviews.len(),
        up_bytes,
    })
}

fn wire_bytes<M: wire::TensorMessage>(msg: &M, tensor: usize) -> Result<usize, RunError> {
    wire::wire_bytes(msg, tensor).map_err(|e| RunError::Data(format!("message too large: {e}")))
}

fn limit(reviews: &[Review], n: usize) -> &[Review] {
    if n == 0 {
        reviews
    } else {
        &reviews[..n.min(reviews.len())]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
