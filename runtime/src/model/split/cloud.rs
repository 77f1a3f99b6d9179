//! The cloud's side of split fine-tuning: admission at Hello, the top's training step
//! and the cut gradient it returns, evaluation batches.

use super::code_cache::CodeCache;
use super::device::{CLASSES, sft_suffix};
use super::halves::{Top, split};
use super::schedule::{LrSchedule, ScheduledAdamW};
use super::snapshot::{self, SnapshotHead, TrainerSnapshot};
use super::spec::{CutForm, SftWeight, TopTraining};
use super::tokens;
use crate::codec::{self, Encoder, Shape};
use crate::model::minilm::{BertShape, MODEL_NAME, MiniLm};
use crate::session::step_limits::{StepCaps, StepLimits};
use crate::wire::{Activations, CodecDesc, CutGradient, Hello, RunPlan};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
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
    top: Top,
    optimizer: ScheduledAdamW,
    device: Device,
    admission: Admission,
    training: TopTraining,
    gradient: Option<Encoder>,
    /// A frozen bottom's codes, kept by review.
    codes: CodeCache,
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
        device.seed(seed);
        let (_, top) = split(model, admission.cut, admission.form, CLASSES, device)?;
        let top = match training {
            TopTraining::PerDevice => top,
            // alpha = 2r: the usual LoRA scaling of 2, as on the device.
            TopTraining::Lora { rank } => top.with_lora(rank, 2.0 * rank as f64, device),
        };
        let gradient = admission
            .gradient
            .map(Encoder::per_step)
            .transpose()
            .map_err(|e| format!("gradient codec: {e}"))?;
        let schedule = admission.schedule(schedule);
        Ok(Self {
            top,
            optimizer: ScheduledAdamW::new(schedule),
            device: device.clone(),
            gradient,
            admission,
            training,
            codes: CodeCache::default(),
        })
    }

    /// This trainer keeping up to `budget_bytes` of a frozen bottom's codes for the
    /// device to send by review id (none by default).
    pub fn with_code_cache(mut self, budget_bytes: usize) -> Self {
        self.codes = CodeCache::new(budget_bytes);
        self
    }

    /// What this top was built for.
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// Training steps this top has taken.
    pub fn updates(&self) -> u64 {
        self.optimizer.updates()
    }

    /// Writes this top's state now to `path` (for [`Self::resume`]), crash-safely.
    pub fn save_snapshot(&self, path: &Path) -> Result<(), String> {
        let encoder = self
            .gradient
            .as_ref()
            .map(Encoder::memory)
            .unwrap_or_default();
        let head = SnapshotHead {
            run: self.admission.plan.run,
            next_step: self.updates(),
            settings: &snapshot_settings(&self.admission, self.training),
            encoder: &encoder,
        };
        snapshot::save(
            path,
            snapshot::TOP_MAGIC,
            head,
            Some((&self.top, &self.optimizer)),
        )
    }

    /// Continues the top in `saved` (what [`Self::save_snapshot`] wrote of a top with the same
    /// [`Admission::run_settings`]); the other arguments as for [`Self::new`].
    pub fn resume(
        model: MiniLm,
        device: &Device,
        admission: Admission,
        training: TopTraining,
        schedule: LrSchedule,
        seed: u64,
        saved: TrainerSnapshot,
    ) -> Result<Self, String> {
        let expected = snapshot_settings(&admission, training);
        if saved.settings != expected {
            return Err(format!(
                "the saved top is of another request or top ({}); this one is {expected}",
                saved.settings,
            ));
        }
        let mut trainer = Self::new(model, device, admission, training, schedule, seed)?;
        (trainer.top, trainer.optimizer) = snapshot::restore(
            trainer.top,
            admission.schedule(schedule),
            saved.next_step,
            saved.module,
            saved.optimizer,
        )?;
        if let Some(gradient) = admission.gradient {
            trainer.gradient = Some(
                Encoder::restore_per_step(gradient, saved.encoder)
                    .map_err(|e| format!("gradient codec: {e}"))?,
            );
        }
        Ok(trainer)
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
        let (seq_lens, labels) = self.check(activations)?;
        let (batch, seq, width) = (
            seq_lens.len(),
            usize::from(activations.seq),
            self.admission.width(),
        );
        let tokens: usize = seq_lens.iter().sum();
        let packed = if activations.cached {
            self.codes
                .rows(&activations.reviews, &seq_lens, width)
                .map_err(|e| format!("step {}: {e}", activations.step))?
        } else {
            codec::decode(activations.codec, Shape::new(tokens, width), tensor)
                .map_err(|e| format!("step {}: {e}", activations.step))?
        };
        if packed.iter().any(|v| !v.is_finite()) {
            return Err(format!("step {}: non-finite activations", activations.step));
        }
        // A frozen bottom's training batch: its codes are the same every epoch.
        let kept = activations.train
            && self.gradient.is_none()
            && !activations.reviews.is_empty()
            && self
                .codes
                .keep(&activations.reviews, &seq_lens, &packed, width);
        let padded = tokens::unpack(&packed, &seq_lens, seq, width);
        // Evaluation runs without autodiff: a graph recorded with no backward to free it
        // would only grow.
        let (top, device) = if activations.train {
            (self.top.clone(), self.device.clone())
        } else {
            (self.top.valid(), self.device.clone().without_autodiff())
        };
        let mut cut = Tensor::<3>::from_data(TensorData::new(padded, [batch, seq, width]), &device);
        // The cut's gradient is only computed for a device that wants it back.
        if activations.train && self.gradient.is_some() {
            cut = cut.require_grad();
        }
        let logits = top.forward(cut.clone(), &seq_lens);
        let targets = Tensor::<1, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| i64::from(l)).collect(), [batch]),
            &device,
        );
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits.clone(), targets);
        let loss_value: f32 = loss.clone().into_scalar();
        let reply = |codec, payload: &Vec<u8>| CutGradient {
            step: activations.step,
            loss: loss_value,
            kept,
            codec,
            payload_len: payload.len() as u64,
        };
        if !activations.train {
            let values: Vec<f32> = logits
                .into_data()
                .try_to_vec()
                .map_err(|e| format!("{e:?}"))?;
            let mut identity = Encoder::new(CodecDesc::Identity).map_err(|e| e.to_string())?;
            let bytes = identity
                .encode_bytes(&values, Shape::new(batch, CLASSES))
                .map_err(|e| e.to_string())?;
            return Ok((reply(CodecDesc::Identity, &bytes), bytes));
        }
        if !loss_value.is_finite() {
            return Ok((reply(CodecDesc::Identity, &Vec::new()), Vec::new()));
        }
        let mut grads = loss.backward();
        let cut_grad = cut.grad_remove(&mut grads);
        let params = GradientsParams::from_grads(grads, &self.top);
        self.top = self.optimizer.step(self.top.clone(), params);
        let (Some(encoder), Some(cut_grad)) = (&mut self.gradient, cut_grad) else {
            return Ok((reply(CodecDesc::Identity, &Vec::new()), Vec::new()));
        };
        let values: Vec<f32> = cut_grad
            .into_data()
            .try_to_vec()
            .map_err(|e| format!("{e:?}"))?;
        let packed = tokens::pack(&values, &seq_lens, seq, width);
        let bytes = encoder
            .encode_bytes(&packed, Shape::new(tokens, width))
            .map_err(|e| format!("step {}: gradient: {e}", activations.step))?;
        Ok((reply(encoder.desc(), &bytes), bytes))
    }

    /// Checks the message against the admission: width, batch layout, labels.
    fn check(&self, a: &Activations) -> Result<(Vec<usize>, Vec<u32>), String> {
        let bad = |what: String| Err(format!("step {}: {what}", a.step));
        // The transport checked the header against the same limits before reading the
        // tensor; a step that reaches the top any other way is checked here again.
        self.admission
            .step_limits()
            .check(a)
            .map_err(|e| e.to_string())?;
        if a.labels.len() != usize::from(a.batch) {
            return bad(format!("{} labels for batch {}", a.labels.len(), a.batch));
        }
        if let Some(label) = a.labels.iter().find(|&&l| l as usize >= CLASSES) {
            return bad(format!("label {label} of {CLASSES} classes"));
        }
        if a.cached && (!a.train || self.gradient.is_some() || a.payload_len != 0) {
            return bad(
                "cached codes are for training batches of a frozen bottom, with no tensor".into(),
            );
        }
        Ok((
            a.seq_lens.iter().map(|&l| usize::from(l)).collect(),
            a.labels.to_vec(),
        ))
    }
}
