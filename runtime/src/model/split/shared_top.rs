//! One top trained by every device (SplitFed): one copy in memory whatever the number
//! of devices, each device keeping only its [`StepLink`]. Steps of several devices that
//! arrive together train it as one batch: one forward and backward over their stacked
//! cut tensors and one optimizer update, each device's loss its own batch's mean, so
//! each device gets the cut gradient it would get alone on the same weights.

use super::cloud::{Admission, top_of};
use super::halves::Top;
use super::schedule::{LrSchedule, ScheduledAdamW};
use super::snapshot::{self, SnapshotHead, TrainerSnapshot};
use super::spec::{CutForm, TopTraining};
use super::step_link::{PreparedStep, StepLink};
use super::top_trainer::{NOT_FINITE, TopTrainer};
use crate::model::minilm::MiniLm;
use crate::wire::{Activations, CutGradient};
use burn::tensor::Device;
use std::path::Path;

/// A device's step for [`SharedTop::step_batch`]: its link, message and tensor.
pub type LinkStep<'a> = (&'a mut StepLink, &'a Activations, &'a [u8]);

/// A step's reply: the cut gradient and its tensor, or one line for the device's
/// operator.
pub type StepReply = Result<(CutGradient, Vec<u8>), String>;

/// Where a shared top sits in the model: every device that trains it asks for this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopShape {
    /// Layers below it, on the devices.
    pub cut: usize,
    /// What crosses the cut.
    pub form: CutForm,
}

impl TopShape {
    /// Whether a device admitted with `admission` can train a top of this shape: the
    /// same cut and form. The error is one line for the device's operator.
    pub fn serves(&self, admission: &Admission) -> Result<(), String> {
        if (admission.cut, admission.form) == (self.cut, self.form) {
            return Ok(());
        }
        Err(format!(
            "this cloud trains one top shared by all devices, at cut {} with {:?} crossing it; this device asked for cut {} with {:?}",
            self.cut, self.form, admission.cut, admission.form
        ))
    }
}

/// The top every device trains.
pub struct SharedTop {
    trainer: TopTrainer,
    shape: TopShape,
}

impl SharedTop {
    /// The top of `model` (the whole encoder, on `device`) above `cut` in `form`, at the
    /// cloud's `schedule` (no device's plan: the top outlives each device's run), its
    /// head initialised from `seed`. The error is one line for the device's operator.
    pub fn new(
        model: MiniLm,
        device: &Device,
        cut: usize,
        form: CutForm,
        schedule: LrSchedule,
        seed: u64,
    ) -> Result<Self, String> {
        let top = top_of(model, device, cut, form, TopTraining::Shared, seed)?;
        Ok(Self::with_top(top, device, cut, form, schedule))
    }

    /// A shared top training `top` (cut from the model at `cut` in `form`).
    pub(super) fn with_top(
        top: Top,
        device: &Device,
        cut: usize,
        form: CutForm,
        schedule: LrSchedule,
    ) -> Self {
        Self {
            trainer: TopTrainer {
                top,
                optimizer: ScheduledAdamW::new(schedule),
                device: device.clone(),
            },
            shape: TopShape { cut, form },
        }
    }

    /// Where this top sits in the model.
    pub fn shape(&self) -> TopShape {
        self.shape
    }

    /// Updates this top has taken (one per batch).
    pub fn updates(&self) -> u64 {
        self.trainer.optimizer.updates()
    }

    /// What a snapshot of this top records it was made for.
    fn settings(&self) -> String {
        format!("shared top, cut {} {:?}", self.shape.cut, self.shape.form)
    }

    /// Writes this top's state to `path`, crash-safely.
    pub fn save_snapshot(&self, path: &Path) -> Result<(), String> {
        let head = SnapshotHead {
            run: 0,
            next_step: self.updates(),
            settings: &self.settings(),
            encoder: &Default::default(),
        };
        snapshot::save(
            path,
            snapshot::TOP_MAGIC,
            head,
            Some((&self.trainer.top, &self.trainer.optimizer)),
        )
    }

    /// Continues from `saved` (what [`Self::save_snapshot`] wrote of a top at the same
    /// cut and form); on an error this top is left as it was.
    pub fn resume(&mut self, saved: TrainerSnapshot) -> Result<(), String> {
        if saved.settings != self.settings() {
            return Err(format!(
                "the saved shared top is of another cut or form ({}); this one is {}",
                saved.settings,
                self.settings()
            ));
        }
        self.trainer
            .restore(saved.next_step, saved.module, saved.optimizer)
    }

    /// The steps of several devices (each link at most once): evaluation batches are
    /// evaluated one by one, training batches train the top together as one batch.
    /// Replies in the order of `steps`; a step that fails its checks is refused alone.
    pub fn step_batch(&mut self, steps: Vec<LinkStep<'_>>) -> Vec<StepReply> {
        let mut replies: Vec<Option<StepReply>> = Vec::with_capacity(steps.len());
        let mut training: Vec<(usize, &mut StepLink, PreparedStep)> = Vec::new();
        for (at, (link, activations, tensor)) in steps.into_iter().enumerate() {
            replies.push(None);
            match link.prepare(activations, tensor) {
                Err(refused) => replies[at] = Some(Err(refused)),
                Ok(prepared) if prepared.train => training.push((at, link, prepared)),
                Ok(prepared) => {
                    let reply = self
                        .trainer
                        .evaluate(&prepared)
                        .and_then(|outcome| link.answer(&prepared, outcome));
                    replies[at] = Some(reply);
                }
            }
        }
        let prepared: Vec<&PreparedStep> = training.iter().map(|(_, _, p)| p).collect();
        let trained = if prepared.is_empty() {
            Ok(Vec::new())
        } else {
            self.trainer.train(&prepared)
        };
        match trained {
            Ok(outcomes) => {
                for ((at, link, prepared), outcome) in training.iter_mut().zip(outcomes) {
                    replies[*at] = Some(link.answer(prepared, outcome));
                }
            }
            // One device's steps may have made the batch's gradients overflow: nothing
            // was updated, so each step trains alone and only the culprit is refused.
            Err(failed) if failed == NOT_FINITE && training.len() > 1 => {
                for (at, link, prepared) in training.iter_mut() {
                    let reply = self
                        .trainer
                        .train(&[&*prepared])
                        .and_then(|mut outcome| {
                            outcome
                                .pop()
                                .ok_or_else(|| "the top returned no outcome".to_string())
                        })
                        .and_then(|outcome| link.answer(prepared, outcome));
                    replies[*at] = Some(reply);
                }
            }
            Err(failed) => {
                for (at, ..) in &training {
                    replies[*at] = Some(Err(failed.clone()));
                }
            }
        }
        replies
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| Err("the shared top skipped this step".into())))
            .collect()
    }
}
