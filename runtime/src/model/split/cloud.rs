//! The cloud's side of split fine-tuning: admission at Hello, the top's training step
//! and the cut gradient it returns, evaluation batches.

use super::device::{CLASSES, sft_suffix};
use super::halves::{Top, split};
use super::schedule::{LrSchedule, ScheduledAdamW};
use super::snapshot::{self, SnapshotHead, TrainerSnapshot};
use super::spec::{CutForm, SftWeight, TopTraining};
use super::step_link::StepLink;
use super::top_trainer::TopTrainer;
use crate::codec::Encoder;
use crate::model::minilm::{BertShape, MODEL_NAME, MiniLm};
use crate::session::step_limits::{StepCaps, StepLimits};
use crate::wire::{Activations, CodecDesc, CutGradient, Hello, RunPlan};
use burn::tensor::Device;
use std::path::Path;
use tandem_kernels::linalg::MAX_RANK;

/// What a device asked for at Hello, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Layers on the device.
    pub cut: usize,
    /// What crosses the cut.
    pub form: CutForm,
    /// How to encode the gradient; `None`: the device wants none (frozen bottom).
    pub gradient: Option<CodecDesc>,
    /// The run the device plans: its steps and warm-up schedule the top's learning rate
    /// (none said: the cloud's own schedule).
    pub plan: RunPlan,
}

/// The longest run a device may plan: a bound on what a Hello can ask, far above any
/// fine-tuning run (a billion steps).
pub const MAX_PLANNED_STEPS: u64 = 1_000_000_000;

impl Admission {
    /// Checks a device's Hello against what this cloud serves: all-MiniLM-L6-v2 (or its
    /// SFT forms), a cut in 1..=5, a width of 384 (or the SFT rank, 1..=64), and a
    /// gradient codec it can encode, and steps no larger than `caps`. The error is one
    /// line for the device's operator.
    pub fn check(hello: &Hello, caps: StepCaps) -> Result<Self, String> {
        let model = &hello.model;
        let shape = BertShape::MINILM_L6;
        let sft = match model.name.as_str().strip_prefix(MODEL_NAME) {
            Some("") => None,
            Some(suffix) if suffix == sft_suffix(SftWeight::W1) => Some(SftWeight::W1),
            Some(suffix) if suffix == sft_suffix(SftWeight::W2) => Some(SftWeight::W2),
            _ => {
                return Err(format!(
                    "this cloud serves {MODEL_NAME}, not `{}`",
                    model.name
                ));
            }
        };
        let cut = usize::from(model.cut);
        if !(1..shape.layers).contains(&cut) {
            return Err(format!("cut {cut} is not in 1..={}", shape.layers - 1));
        }
        let width = usize::from(model.hidden);
        let form = if let Some(weight) = sft {
            if !(1..=MAX_RANK).contains(&width) {
                return Err(format!("SFT rank {width} is not in 1..={MAX_RANK}"));
            }
            CutForm::Sft {
                rank: width,
                weight,
            }
        } else {
            if width != shape.hidden {
                return Err(format!(
                    "width {width} at the cut, the model's is {}",
                    shape.hidden
                ));
            }
            CutForm::Hidden
        };
        let gradient = match hello.codecs.first() {
            None => None,
            Some(CodecDesc::Acp { .. }) => {
                return Err("gradient codec: ACP is for federated updates only".into());
            }
            Some(&desc) => {
                Encoder::new(desc).map_err(|e| format!("gradient codec: {e}"))?;
                Some(desc)
            }
        };
        let plan = hello.plan;
        StepLimits::of(hello)
            .admit(caps)
            .map_err(|e| e.to_string())?;
        if plan.steps.max(plan.warmup) > MAX_PLANNED_STEPS {
            return Err(format!(
                "a run of {} steps with {} warm-up steps: expected at most {MAX_PLANNED_STEPS} of each",
                plan.steps, plan.warmup
            ));
        }
        Ok(Self {
            cut,
            form,
            gradient,
            plan,
        })
    }

    /// The top's learning-rate schedule: the cloud's own (`cloud`) peak over the
    /// device's planned steps and warm-up, or `cloud` whole when the device planned none.
    pub fn schedule(&self, cloud: LrSchedule) -> LrSchedule {
        if self.plan.steps == 0 {
            return cloud;
        }
        LrSchedule {
            peak: cloud.peak,
            warmup: self.plan.warmup,
            total: self.plan.steps,
        }
    }

    /// Values per token that cross the cut.
    pub fn width(&self) -> usize {
        self.form.width(BertShape::MINILM_L6.hidden)
    }

    /// The largest step the device agreed to send.
    pub fn step_limits(&self) -> StepLimits {
        StepLimits::declared(&self.plan, self.width() as u16)
    }

    /// What a top trained for this admission is, whichever device process asks: the
    /// request and the run, not the process or its start (recorded in snapshots).
    pub fn run_settings(&self) -> String {
        let plan = self.plan;
        format!(
            "cut {} {:?} gradient {:?} run {:016x} of {} steps, {} warm-up, checkpoints every {}",
            self.cut,
            self.form,
            self.gradient,
            plan.run,
            plan.steps,
            plan.warmup,
            plan.checkpoint_every
        )
    }
}

/// What a top's snapshot records it was made for: the request and run, and how the
/// cloud trains it (a resume must match both).
fn snapshot_settings(admission: &Admission, training: TopTraining) -> String {
    format!("{}, top {training}", admission.run_settings())
}

/// The top half of one device's model, being trained.
pub struct CloudTrainer {
    trainer: TopTrainer,
    link: StepLink,
    training: TopTraining,
}

impl CloudTrainer {
    /// Keeps the top of `model` (the whole encoder, loaded on `device`) for
    /// `admission`'s cut, its learning rate scheduled over the device's planned run
    /// (`schedule` gives the peak, and the whole schedule when the device planned none).
    /// Pass a clone of one loaded model per device: burn tensors are
    /// reference-counted, so the clones share the base weights until trained. The
    /// classifier head is initialised from `seed`. The error is one line for the
    /// device's operator.
    pub fn new(
        model: MiniLm,
        device: &Device,
        admission: Admission,
        training: TopTraining,
        schedule: LrSchedule,
        seed: u64,
    ) -> Result<Self, String> {
        let top = top_of(model, device, admission.cut, admission.form, training, seed)?;
        Ok(Self {
            trainer: TopTrainer {
                top,
                optimizer: ScheduledAdamW::new(admission.schedule(schedule)),
                device: device.clone(),
            },
            link: StepLink::new(admission)?,
            training,
        })
    }

    /// This trainer keeping up to `budget_bytes` of a frozen bottom's codes for the
    /// device to send by review id (none by default).
    pub fn with_code_cache(mut self, budget_bytes: usize) -> Self {
        self.link = self.link.with_code_cache(budget_bytes);
        self
    }

    /// What this top was built for.
    pub fn admission(&self) -> Admission {
        self.link.admission()
    }

    /// Training steps this top has taken.
    pub fn updates(&self) -> u64 {
        self.trainer.optimizer.updates()
    }

    /// Writes this top's state now to `path` (for [`Self::resume`]), crash-safely.
    pub fn save_snapshot(&self, path: &Path) -> Result<(), String> {
        let admission = self.admission();
        let head = SnapshotHead {
            run: admission.plan.run,
            next_step: self.updates(),
            settings: &snapshot_settings(&admission, self.training),
            encoder: &self.link.encoder_memory(),
        };
        snapshot::save(
            path,
            snapshot::TOP_MAGIC,
            head,
            Some((&self.trainer.top, &self.trainer.optimizer)),
        )
    }

    /// This new top continued from `saved` (what [`Self::save_snapshot`] wrote of a top
    /// with the same [`Admission::run_settings`]): its weights, optimizer state and step,
    /// and the gradient codec's state.
    pub fn resumed(mut self, saved: TrainerSnapshot) -> Result<Self, String> {
        let admission = self.admission();
        let expected = snapshot_settings(&admission, self.training);
        if saved.settings != expected {
            return Err(format!(
                "the saved top is of another request or top ({}); this one is {expected}",
                saved.settings,
            ));
        }
        self.trainer
            .restore(saved.next_step, saved.module, saved.optimizer)?;
        self.link.restore_encoder(saved.encoder)?;
        Ok(self)
    }

    /// One split step. A training batch trains the top and answers with the encoded cut
    /// gradient (or no tensor when the device wants none); an evaluation batch
    /// (`train: false`) answers with the logits (`batch x 2` f32) instead. A non-finite
    /// loss is reported in the reply and the top is not updated.
    pub fn step(
        &mut self,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        let prepared = self.link.prepare(activations, tensor)?;
        let outcome = if prepared.train {
            self.trainer
                .train(&[&prepared])?
                .pop()
                .ok_or("the top made nothing of the step")?
        } else {
            self.trainer.evaluate(&prepared)?
        };
        self.link.answer(&prepared, outcome)
    }
}

/// The top of `model` below `cut` in `form`, trained as `training` says, its head
/// initialised from `seed`. The error is one line for the device's operator.
pub(super) fn top_of(
    model: MiniLm,
    device: &Device,
    cut: usize,
    form: CutForm,
    training: TopTraining,
    seed: u64,
) -> Result<Top, String> {
    // Seeded initialisation: nothing else may draw from burn's generator meanwhile.
    crate::model::with_device_rng(|| {
        device.seed(seed);
        let (_, top) = split(model, cut, form, CLASSES, device)?;
        Ok(match training {
            // One top trained whole, for a device or shared by all.
            TopTraining::PerDevice | TopTraining::Shared => top,
            // alpha = 2r: the usual LoRA scaling of 2, as on the device.
            TopTraining::Lora { rank } => top.with_lora(rank, 2.0 * rank as f64, device),
        })
    })
}
