//! One device's end of the cloud's split step: what it was admitted for, the gradient
//! codec it asked for and its frozen bottom's kept codes. It turns the device's message
//! into the top's input ([`PreparedStep`]) and what the top made of it into the reply;
//! the top may be the device's own ([`super::cloud::CloudTrainer`]) or one that many
//! devices train together ([`super::shared_top::SharedTop`]).

use super::cloud::Admission;
use super::code_cache::CodeCache;
use super::device::CLASSES;
use crate::codec::{self, Encoder, EncoderMemory, Shape};
use crate::wire::{Activations, CodecDesc, CutGradient};

/// A device's step checked and decoded, ready for the top.
pub(super) struct PreparedStep {
    pub step: u64,
    pub train: bool,
    /// The cloud kept this training batch's codes (the device may send ids next epoch).
    pub kept: bool,
    /// Whether the device wants the cut gradient back.
    pub wants_gradient: bool,
    /// The device's padded length.
    pub seq: usize,
    pub seq_lens: Vec<usize>,
    pub labels: Vec<u32>,
    /// The real tokens' cut values, sequence after sequence: `sum(seq_lens) x width`.
    pub packed: Vec<f32>,
    pub width: usize,
}

impl PreparedStep {
    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.seq_lens.len()
    }
}

/// What the top made of a prepared step.
pub(super) struct TopOutcome {
    /// The batch's mean cross-entropy.
    pub loss: f32,
    pub output: TopOutput,
}

pub(super) enum TopOutput {
    /// An evaluation batch's logits, `batch x CLASSES`.
    Logits(Vec<f32>),
    /// A training batch's cut gradient, packed like [`PreparedStep::packed`].
    CutGradient(Vec<f32>),
    /// A training batch with no gradient to return: the device wants none, or its loss
    /// was not finite (and the top was not updated by it).
    Nothing,
}

/// One admitted device's end of the split step.
pub struct StepLink {
    admission: Admission,
    gradient: Option<Encoder>,
    codes: CodeCache,
}

impl StepLink {
    /// The link of a device admitted with `admission`, keeping no codes. The error is
    /// one line for the device's operator.
    pub fn new(admission: Admission) -> Result<Self, String> {
        let gradient = admission
            .gradient
            .map(Encoder::per_step)
            .transpose()
            .map_err(|e| format!("gradient codec: {e}"))?;
        Ok(Self {
            admission,
            gradient,
            codes: CodeCache::default(),
        })
    }

    /// This link keeping up to `budget_bytes` of a frozen bottom's codes for the device
    /// to send by review id.
    pub fn with_code_cache(mut self, budget_bytes: usize) -> Self {
        self.codes = CodeCache::new(budget_bytes);
        self
    }

    /// This link with its gradient codec continuing from `memory` (a snapshot's).
    pub(super) fn restore_encoder(&mut self, memory: EncoderMemory) -> Result<(), String> {
        if let Some(gradient) = self.admission.gradient {
            self.gradient = Some(
                Encoder::restore_per_step(gradient, memory)
                    .map_err(|e| format!("gradient codec: {e}"))?,
            );
        }
        Ok(())
    }

    /// What the gradient codec carries into its next encode.
    pub(super) fn encoder_memory(&self) -> EncoderMemory {
        self.gradient
            .as_ref()
            .map(Encoder::memory)
            .unwrap_or_default()
    }

    /// What the device was admitted for.
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// Checks `activations` against the admission and decodes its cut tensor (or takes
    /// the kept codes of a cached batch). The error is one line for the device's operator.
    pub(super) fn prepare(
        &mut self,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<PreparedStep, String> {
        let (seq_lens, labels) = self.check(activations)?;
        let width = self.admission.width();
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
        Ok(PreparedStep {
            step: activations.step,
            train: activations.train,
            kept,
            wants_gradient: activations.train && self.gradient.is_some(),
            seq: usize::from(activations.seq),
            seq_lens,
            labels,
            packed,
            width,
        })
    }

    /// The reply to `step` from what the top made of it: the encoded cut gradient, the
    /// logits of an evaluation batch (identity-coded), or no tensor.
    pub(super) fn answer(
        &mut self,
        step: &PreparedStep,
        outcome: TopOutcome,
    ) -> Result<(CutGradient, Vec<u8>), String> {
        let reply = |codec, payload: &Vec<u8>| CutGradient {
            step: step.step,
            loss: outcome.loss,
            kept: step.kept,
            codec,
            payload_len: payload.len() as u64,
        };
        match outcome.output {
            TopOutput::Logits(values) => {
                let mut identity = Encoder::new(CodecDesc::Identity).map_err(|e| e.to_string())?;
                let bytes = identity
                    .encode_bytes(&values, Shape::new(step.batch(), CLASSES))
                    .map_err(|e| e.to_string())?;
                Ok((reply(CodecDesc::Identity, &bytes), bytes))
            }
            TopOutput::CutGradient(packed) => {
                let Some(encoder) = &mut self.gradient else {
                    return Ok((reply(CodecDesc::Identity, &Vec::new()), Vec::new()));
                };
                let tokens = step.seq_lens.iter().sum();
                let bytes = encoder
                    .encode_bytes(&packed, Shape::new(tokens, step.width))
                    .map_err(|e| format!("step {}: gradient: {e}", step.step))?;
                Ok((reply(encoder.desc(), &bytes), bytes))
            }
            TopOutput::Nothing => Ok((reply(CodecDesc::Identity, &Vec::new()), Vec::new())),
        }
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
