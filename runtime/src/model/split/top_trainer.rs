//! The top's forward and backward over one batch of prepared steps: one device's, or
//! several devices' stacked into one batch (a shared top), each device's loss its own
//! batch's mean, so each device's cut gradient is the one it would get alone.

use super::device::CLASSES;
use super::halves::Top;
use super::schedule::ScheduledAdamW;
use super::step_link::{PreparedStep, TopOutcome, TopOutput};
use super::tokens;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// What [`TopTrainer::train`] refuses a batch with when its gradients are not finite.
pub(super) const NOT_FINITE: &str = "this step's gradients are not finite (its cut values overflow the top): the top was not updated";

/// The sum of squares of every parameter gradient in `grads`, added up on the device.
struct SquaredGradients<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredGradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(sum) => sum + squares,
                None => squares,
            });
        }
    }
}

/// Whether every gradient of `module`'s parameters in `grads` is finite and its squares
/// sum to a finite f32 (a NaN or infinity propagates into the sum; so does a gradient
/// whose square overflows, which would make AdamW's second moment infinite).
fn gradients_finite<M: Module>(module: &M, grads: &GradientsParams) -> bool {
    let mut squares = SquaredGradients { grads, sum: None };
    module.visit(&mut squares);
    squares
        .sum
        .is_none_or(|sum| sum.into_scalar::<f32>().is_finite())
}

/// A top and its optimizer on its device.
pub(super) struct TopTrainer {
    pub top: Top,
    pub optimizer: ScheduledAdamW,
    pub device: Device,
}

/// `steps`' cut values padded to `seq` and stacked, sequence after sequence:
/// `sum(batch) x seq x width`, with their sequence lengths.
fn stack_padded(steps: &[&PreparedStep], seq: usize) -> (Vec<f32>, Vec<usize>) {
    let mut padded = Vec::new();
    let mut seq_lens = Vec::new();
    for step in steps {
        padded.extend(tokens::unpack(
            &step.packed,
            &step.seq_lens,
            seq,
            step.width,
        ));
        seq_lens.extend_from_slice(&step.seq_lens);
    }
    (padded, seq_lens)
}

/// The cut tensor of `steps` padded to their longest and stacked, on `device`.
fn cut_tensor(steps: &[&PreparedStep], device: &Device) -> (Tensor<3>, Vec<usize>) {
    let seq = steps.iter().map(|s| s.seq).max().unwrap_or(0);
    let (padded, seq_lens) = stack_padded(steps, seq);
    let width = steps.first().map_or(0, |s| s.width);
    let shape = [seq_lens.len(), seq, width];
    (
        Tensor::from_data(TensorData::new(padded, shape), device),
        seq_lens,
    )
}

/// The mean cross-entropy of `logits` (`batch x CLASSES`) against `labels`.
fn loss(logits: Tensor<2>, labels: &[u32], device: &Device) -> Tensor<1> {
    let targets = Tensor::<1, Int>::from_data(
        TensorData::new(
            labels.iter().map(|&l| i64::from(l)).collect(),
            [labels.len()],
        ),
        device,
    );
    CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits, targets)
}

fn values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, String> {
    tensor
        .into_data()
        .try_to_vec()
        .map_err(|e| format!("{e:?}"))
}

impl TopTrainer {
    /// Replaces the top's weights and optimizer state with a snapshot's (`next_step`
    /// updates done), on the top's own schedule; on an error nothing changes.
    pub fn restore(
        &mut self,
        next_step: u64,
        module: Vec<u8>,
        optimizer: Vec<u8>,
    ) -> Result<(), String> {
        (self.top, self.optimizer) = super::snapshot::restore(
            self.top.clone(),
            self.optimizer.schedule(),
            next_step,
            module,
            optimizer,
        )?;
        Ok(())
    }

    /// The logits and loss of an evaluation batch, without autodiff (a graph recorded
    /// with no backward to free it would only grow).
    pub fn evaluate(&self, step: &PreparedStep) -> Result<TopOutcome, String> {
        let device = self.device.clone().without_autodiff();
        let (cut, seq_lens) = cut_tensor(&[step], &device);
        let logits = self.top.valid().forward(cut, &seq_lens);
        let loss: f32 = loss(logits.clone(), &step.labels, &device).into_scalar();
        Ok(TopOutcome {
            loss,
            output: TopOutput::Logits(values(logits)?),
        })
    }

    /// One update of the top from training batches `steps` (one device's, or several
    /// devices' stacked): the loss is the sum of each batch's mean, so the parameters'
    /// gradient is the sum of what each batch would give alone and each batch's cut
    /// gradient is its own. A batch whose loss is not finite is left out of the update
    /// (nothing is updated when all are). Gradients that are not finite (cut values that
    /// overflow in the backward pass) are refused with [`NOT_FINITE`] before the
    /// optimizer sees them: a top that others share is never poisoned.
    pub fn train(&mut self, steps: &[&PreparedStep]) -> Result<Vec<TopOutcome>, String> {
        let device = self.device.clone();
        let (mut cut, seq_lens) = cut_tensor(steps, &device);
        // The cut's gradient is only computed for devices that want it back.
        let wanted = steps.iter().any(|s| s.wants_gradient);
        if wanted {
            cut = cut.require_grad();
        }
        let logits = self.top.forward(cut.clone(), &seq_lens);
        let mut total: Option<Tensor<1>> = None;
        let mut losses = Vec::with_capacity(steps.len());
        let mut row = 0;
        for step in steps {
            let rows = row..row + step.batch();
            row = rows.end;
            let mine = loss(
                logits.clone().slice([rows, 0..CLASSES]),
                &step.labels,
                &device,
            );
            let value: f32 = mine.clone().into_scalar();
            losses.push(value);
            if value.is_finite() {
                total = Some(match total {
                    Some(sum) => sum + mine,
                    None => mine,
                });
            }
        }
        let nothing = |losses: Vec<f32>| {
            losses
                .into_iter()
                .map(|loss| TopOutcome {
                    loss,
                    output: TopOutput::Nothing,
                })
                .collect()
        };
        let Some(total) = total else {
            return Ok(nothing(losses));
        };
        let mut grads = total.backward();
        let cut_grad = cut.grad_remove(&mut grads);
        let params = GradientsParams::from_grads(grads, &self.top);
        if !gradients_finite(&self.top, &params) {
            return Err(NOT_FINITE.into());
        }
        let padded = match (wanted, cut_grad) {
            (true, Some(cut_grad)) => {
                let [_, seq, width] = cut_grad.dims();
                let padded = values(cut_grad)?;
                if padded.iter().any(|v| !v.is_finite()) {
                    return Err(NOT_FINITE.into());
                }
                Some((padded, seq, width))
            }
            _ => None,
        };
        self.top = self.optimizer.step(self.top.clone(), params);
        let Some((padded, seq, width)) = padded else {
            return Ok(nothing(losses));
        };
        let mut outcomes = Vec::with_capacity(steps.len());
        let mut at = 0;
        for (step, loss) in steps.iter().zip(losses) {
            let mine = &padded[at..at + step.batch() * seq * width];
            at += mine.len();
            let output = if step.wants_gradient && loss.is_finite() {
                TopOutput::CutGradient(tokens::pack(mine, &step.seq_lens, seq, width))
            } else {
                TopOutput::Nothing
            };
            outcomes.push(TopOutcome { loss, output });
        }
        Ok(outcomes)
    }
}
