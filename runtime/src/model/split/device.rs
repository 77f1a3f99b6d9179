//! The device's side of split fine-tuning: the bottom forward pass, encoding of the cut
//! tensor, and the backward pass from the gradient the cloud returns.

use super::halves::{Bottom, split};
use super::position::RunPosition;
use super::schedule::{LrSchedule, ScheduledAdamW};
use super::snapshot::{self, SnapshotHead, TrainerSnapshot};
use super::spec::{CutForm, LinkCodec, Mode, SftWeight};
use super::tokens;
use crate::codec::{self, Encoder, Report, Shape};
use crate::model::ComputeBackend;
use crate::model::minilm::{Batch, MODEL_NAME, MiniLm, ModelError};
use crate::wire::{Activations, CodecDesc, CutGradient, Hello, ModelDesc, RunPlan};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use std::path::Path;

/// Classes of the sentiment task.
pub const CLASSES: usize = 2;

/// Suffix of the model name when the SFT code crosses the cut, by factored weight.
pub fn sft_suffix(weight: SftWeight) -> &'static str {
    match weight {
        SftWeight::W1 => "+sft-w1",
        SftWeight::W2 => "+sft-w2",
    }
}

/// A device run's settings.
#[derive(Clone, Debug)]
pub struct DeviceSetup {
    /// Layers on the device (1..=5).
    pub cut: usize,
    /// Which device layers train.
    pub mode: Mode,
    /// What crosses the cut and how it is encoded, both ways.
    pub codec: LinkCodec,
    /// LoRA rank in [`Mode::LoraBottom`] (1..=`MAX_LORA_RANK`).
    pub lora_rank: usize,
    /// Learning rate of the device's optimizer.
    pub schedule: LrSchedule,
    /// Seeds burn's random state (LoRA initialisation).
    pub seed: u64,
    /// Reviews per step (and per evaluation batch): with the run's seed
    /// ([`super::run::RunConfig::seed`]), it fixes which reviews each step trains on, so
    /// a checkpoint records it. Hello tells the cloud, which refuses larger steps.
    pub batch_size: usize,
    /// Tokens kept per review (the tokenizer's): the longest padded sequence a step
    /// carries, as Hello tells the cloud.
    pub max_len: usize,
}

/// Why a device step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The model could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The settings are not servable (cut, rank).
    #[error("{0}")]
    Setup(String),
    /// Encoding or decoding a tensor failed.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// A checkpoint could not be written or read back.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The checkpoint is of a run with other settings.
    #[error(
        "checkpoint {path} is of another run ({found}); this one is {expected}: pass that run's flags, or start afresh without --resume"
    )]
    ForeignCheckpoint {
        /// The file.
        path: std::path::PathBuf,
        /// This trainer's settings.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
    /// The cloud answered with something this device did not ask for.
    #[error("cloud reply: {0}")]
    Reply(String),
}

/// One batch through the bottom, encoded.
#[derive(Debug)]
pub struct Forward {
    /// The message (its `step` is set by the session).
    pub activations: Activations,
    /// The encoded cut tensor.
    pub tensor: Vec<u8>,
    /// Bytes, ratio and error of the encoding.
    pub report: Report,
    /// Time in the bottom layers.
    pub compute: std::time::Duration,
    /// Time encoding.
    pub encode: std::time::Duration,
}

/// The device half being trained.
pub struct DeviceTrainer {
    bottom: Bottom,
    optimizer: Option<ScheduledAdamW>,
    device: Device,
    setup: DeviceSetup,
    encoder: Encoder,
    /// The model's hidden size.
    hidden: usize,
    /// Values per token that cross the cut (`hidden`, or the SFT rank).
    width: usize,
    /// The cut tensor of the step whose gradient is awaited, and its batch layout.
    pending: Option<(Tensor<3>, Vec<usize>, usize)>,
}

impl DeviceTrainer {
    /// Loads the model from `model_dir` and keeps the bottom `setup.cut` layers.
    pub fn new(
        model_dir: &Path,
        backend: ComputeBackend,
        setup: DeviceSetup,
    ) -> Result<Self, DeviceError> {
        let device = if setup.mode.wants_gradient() {
            backend.training_device()
        } else {
            backend.device()
        };
        let max_lora = crate::model::minilm::lora::MAX_LORA_RANK;
        if setup.mode == Mode::LoraBottom && !(1..=max_lora).contains(&setup.lora_rank) {
            return Err(DeviceError::Setup(format!(
                "LoRA rank {} is not in 1..={max_lora}",
                setup.lora_rank
            )));
        }
        // Seeded initialisation: nothing else may draw from burn's generator meanwhile.
        let (bottom, hidden) = crate::model::with_device_rng(|| {
            device.seed(setup.seed);
            let model = MiniLm::load(model_dir, &device)?;
            let hidden = model.encoder.layer[0].output.dense.weight.dims()[1];
            let (bottom, _) = split(model, setup.cut, setup.codec.form, CLASSES, &device)
                .map_err(DeviceError::Setup)?;
            let bottom = match setup.mode {
                Mode::FrozenBottom => bottom.no_grad(),
                Mode::TrainBottom => bottom,
                // alpha = 2r: the usual LoRA scaling of 2.
                Mode::LoraBottom => {
                    bottom.with_lora(setup.lora_rank, 2.0 * setup.lora_rank as f64, &device)
                }
            };
            Ok::<_, DeviceError>((bottom, hidden))
        })?;
        let optimizer = setup
            .mode
            .wants_gradient()
            .then(|| ScheduledAdamW::new(setup.schedule));
        Ok(Self {
            bottom,
            optimizer,
            device,
            encoder: Encoder::per_step(setup.codec.tensor)?,
            hidden,
            width: setup.codec.form.width(hidden),
            setup,
            pending: None,
        })
    }

    /// The model description for Hello: name (with [`sft_suffix`] for the SFT code),
    /// cut, width.
    pub fn model_desc(&self) -> ModelDesc {
        let mut name = heapless::String::new();
        let _ = name.push_str(MODEL_NAME);
        if let CutForm::Sft { weight, .. } = self.setup.codec.form {
            let _ = name.push_str(sft_suffix(weight));
        }
        ModelDesc {
            name,
            cut: self.setup.cut as u8,
            hidden: self.width as u16,
        }
    }

    /// Fills the split request of `hello`: [`Self::model_desc`],
    /// [`Self::gradient_codecs`] and the run's plan: steps and warm-up, so the cloud
    /// schedules its top's learning rate alike, and `position`, so it snapshots the top
    /// where this device checkpoints and tells a reconnect from a restart.
    pub fn describe(&self, hello: &mut Hello, position: RunPosition) {
        hello.model = self.model_desc();
        hello.codecs = self.gradient_codecs();
        hello.plan = RunPlan {
            steps: self.setup.schedule.total,
            warmup: self.setup.schedule.warmup,
            run: position.run,
            process: position.process,
            start_step: position.start_step,
            checkpoint_every: position.checkpoint_every,
            max_batch: u16::try_from(self.setup.batch_size).unwrap_or(u16::MAX),
            max_seq: u16::try_from(self.setup.max_len).unwrap_or(u16::MAX),
        };
    }

    /// The codecs this device decodes gradients in: its own tensor codec, or none in
    /// [`Mode::FrozenBottom`] (the cloud then sends no gradient).
    pub fn gradient_codecs(&self) -> heapless::Vec<CodecDesc, 8> {
        let mut codecs = heapless::Vec::new();
        if self.setup.mode.wants_gradient() {
            let _ = codecs.push(self.setup.codec.tensor);
        }
        codecs
    }

    /// The model's hidden size: per token, `hidden` f32 values are what an uncompressed
    /// cut would send (the baseline of the compression ratio).
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Runs the bottom on `batch` and encodes the cut tensor (real tokens only). For a
    /// training batch of a training mode, the tensor is kept for
    /// [`DeviceTrainer::apply_gradient`]. `reviews` (the batch's training-set ids, or
    /// empty) asks the cloud to keep the codes (frozen bottom only).
    pub fn forward(
        &mut self,
        batch: &Batch,
        labels: &[u32],
        reviews: &[u32],
        train: bool,
    ) -> Result<Forward, DeviceError> {
        let started = std::time::Instant::now();
        let keep = train && self.setup.mode.wants_gradient();
        // Only a kept tensor needs autodiff: a forward-only pass on the autodiff device
        // would record a graph that no backward ever frees.
        let cut = if keep {
            self.bottom.forward(batch, &self.device)
        } else {
            let plain = self.device.clone().without_autodiff();
            self.bottom.valid().forward(batch, &plain)
        };
        let padded: Vec<f32> = cut
            .clone()
            .into_data()
            .try_to_vec()
            .map_err(|e| DeviceError::Setup(format!("cut tensor: {e:?}")))?;
        let compute = started.elapsed();
        let started = std::time::Instant::now();
        let packed = tokens::pack(&padded, &batch.seq_lens, batch.seq, self.width);
        let shape = Shape::new(batch.tokens(), self.width);
        // An evaluation batch is encoded by a copy: the training encoder's state (the
        // low-rank codec's warm start) follows the training batches only, so training
        // does not depend on when or how often the run evaluates.
        let (tensor, report) = if train {
            self.encoder.encode(&packed, shape)?
        } else {
            self.encoder.clone().encode(&packed, shape)?
        };
        let encode = started.elapsed();
        if keep {
            self.pending = Some((cut, batch.seq_lens.clone(), batch.seq));
        }
        let mut activations = self.message(batch, labels, reviews, train);
        activations.payload_len = tensor.len() as u64;
        Ok(Forward {
            activations,
            tensor,
            report,
            compute,
            encode,
        })
    }

    /// A training batch of reviews whose codes the cloud kept (frozen bottom): the
    /// message with their ids and no tensor; the bottom does not run.
    pub fn cached(&self, batch: &Batch, labels: &[u32], reviews: &[u32]) -> Forward {
        let mut activations = self.message(batch, labels, reviews, true);
        activations.cached = true;
        Forward {
            activations,
            tensor: Vec::new(),
            report: Report {
                bytes: 0,
                ratio: f64::INFINITY,
                rel_error: 0.0,
            },
            compute: std::time::Duration::ZERO,
            encode: std::time::Duration::ZERO,
        }
    }

    /// The message of `batch` (its `step` and `payload_len` set by the caller).
    fn message(&self, batch: &Batch, labels: &[u32], reviews: &[u32], train: bool) -> Activations {
        Activations {
            step: 0,
            train,
            batch: batch.len() as u16,
            seq: batch.seq as u16,
            hidden: self.width as u16,
            seq_lens: batch.seq_lens.iter().map(|&l| l as u16).collect(),
            labels: labels.iter().copied().collect(),
            reviews: reviews.iter().copied().collect(),
            cached: false,
            codec: self.encoder.desc(),
            payload_len: 0,
        }
    }

    /// Reviews per training step (and per evaluation batch).
    pub fn batch_size(&self) -> usize {
        self.setup.batch_size
    }

    /// Whether the bottom is frozen: its code of a review is the same every epoch.
    pub fn frozen(&self) -> bool {
        !self.setup.mode.wants_gradient()
    }

    /// Back-propagates the cloud's cut gradient through the bottom and takes one
    /// optimizer step. A no-op in [`Mode::FrozenBottom`]. A non-finite loss in the
    /// reply is the caller's to check first (see [`CutGradient::loss`]).
    pub fn apply_gradient(
        &mut self,
        gradient: &CutGradient,
        tensor: &[u8],
    ) -> Result<(), DeviceError> {
        let Some(optimizer) = &mut self.optimizer else {
            return Ok(());
        };
        let (cut, seq_lens, seq) = self.pending.take().ok_or_else(|| {
            DeviceError::Reply(format!("gradient for step {} unasked", gradient.step))
        })?;
        if gradient.codec != self.setup.codec.tensor {
            return Err(DeviceError::Reply(format!(
                "gradient encoded as {:?}, asked for {:?}",
                gradient.codec, self.setup.codec.tensor
            )));
        }
        let tokens: usize = seq_lens.iter().sum();
        let packed = codec::decode(gradient.codec, Shape::new(tokens, self.width), tensor)?;
        let padded = tokens::unpack(&packed, &seq_lens, seq, self.width);
        let g = Tensor::<3>::from_data(
            TensorData::new(padded, [seq_lens.len(), seq, self.width]),
            &self.device,
        );
        // d/dθ sum(cut * g) = (dcut/dθ)^T g: the chain rule through the cut.
        let grads = (cut * g).sum().backward();
        let grads = GradientsParams::from_grads(grads, &self.bottom);
        self.bottom = optimizer.step(self.bottom.clone(), grads);
        Ok(())
    }

    /// What this trainer was set up for, as a checkpoint records it: a resume must ask
    /// for the same.
    pub fn settings(&self) -> String {
        format!("{:?}", self.setup)
    }

    /// Writes this trainer's state after `next_step` training steps of run `run` to
    /// `path`, crash-safely (the old file stays until the new one is complete): the
    /// bottom's parameters and optimizer state (none when frozen) and the codec's memory.
    pub fn save_checkpoint(
        &self,
        path: &Path,
        run: u64,
        next_step: u64,
    ) -> Result<(), DeviceError> {
        let failed = |reason: String| DeviceError::Checkpoint {
            path: path.into(),
            reason,
        };
        let encoder = self.encoder.memory();
        let head = SnapshotHead {
            run,
            next_step,
            settings: &self.settings(),
            encoder: &encoder,
        };
        let trained = self.optimizer.as_ref().map(|o| (&self.bottom, o));
        snapshot::save(path, snapshot::DEVICE_MAGIC, head, trained).map_err(failed)
    }

    /// Continues from the checkpoint at `path` (made by [`Self::save_checkpoint`] with
    /// the same settings); returns its run and next step, or `None` when there is no
    /// file.
    pub fn resume(&mut self, path: &Path) -> Result<Option<(u64, u64)>, DeviceError> {
        let failed = |reason: String| DeviceError::Checkpoint {
            path: path.into(),
            reason,
        };
        let Some(saved) = TrainerSnapshot::load(path, snapshot::DEVICE_MAGIC)
            .map_err(|e| failed(e.to_string()))?
        else {
            return Ok(None);
        };
        if saved.settings != self.settings() {
            return Err(DeviceError::ForeignCheckpoint {
                path: path.into(),
                expected: self.settings(),
                found: saved.settings,
            });
        }
        if self.optimizer.is_some() {
            let (bottom, optimizer) = snapshot::restore(
                self.bottom.clone(),
                self.setup.schedule,
                saved.next_step,
                saved.module,
                saved.optimizer,
            )
            .map_err(failed)?;
            self.bottom = bottom;
            self.optimizer = Some(optimizer);
        }
        self.encoder = Encoder::restore_per_step(self.setup.codec.tensor, saved.encoder)?;
        self.pending = None;
        Ok(Some((saved.run, saved.next_step)))
    }
}
