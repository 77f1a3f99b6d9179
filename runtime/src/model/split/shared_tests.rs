//! A shared top trains several devices' steps as one batch: each device gets the loss
//! and cut gradient it would get from a step of its own on the same weights, and a step
//! that fails its checks is refused without the others.

use super::cloud::{Admission, top_of};
use super::device::{DeviceSetup, DeviceTrainer, Forward};
use super::shared_top::{SharedTop, StepReply};
use super::{LinkCodec, LrSchedule, Mode, StepLink, TopTraining};
use crate::model::ComputeBackend;
use crate::model::minilm::{MiniLm, model_dir};
use crate::session::step_limits::StepCaps;
use crate::wire::{Capabilities, Hello, NodeName};

/// Two reviews a batch, of different lengths, so the stacked batch pads one of them.
const BATCHES: [[(&str, u32); 2]; 2] = [
    [
        ("a gorgeous, witty, seductive movie.", 1),
        ("the acting is dreadful.", 0),
    ],
    [
        (
            "it never rises above its silly premise, and the ending drags on and on.",
            0,
        ),
        (
            "charming and funny from start to finish, a moving, beautifully made story.",
            1,
        ),
    ],
];

const SCHEDULE: LrSchedule = LrSchedule {
    peak: 1e-3,
    warmup: 2,
    total: 10,
};

/// Each batch's forward through a trained bottom at cut 1 (identity both ways), and
/// the admission of such a device; `None` when the model is not cached.
fn forwards() -> Option<(Vec<Forward>, Admission)> {
    let dir = model_dir();
    let tokenizer = super::tests::cached_tokenizer()?;
    let setup = DeviceSetup {
        cut: 1,
        mode: Mode::TrainBottom,
        codec: LinkCodec::parse("identity").unwrap(),
        lora_rank: 4,
        schedule: SCHEDULE,
        seed: 7,
        batch_size: 2,
        max_len: 32,
    };
    let mut hello = Hello::probe(NodeName::try_from("d1").unwrap(), Default::default());
    hello.capabilities = Capabilities::SPLIT;
    let mut forwards = Vec::new();
    for (i, batch) in BATCHES.iter().enumerate() {
        // A device per batch: a device's forward waits for its gradient.
        let mut device = DeviceTrainer::new(&dir, ComputeBackend::Flex, setup.clone()).unwrap();
        device.describe(&mut hello, super::run::RunPosition::fresh(0));
        let texts: Vec<&str> = batch.iter().map(|t| t.0).collect();
        let labels: Vec<u32> = batch.iter().map(|t| t.1).collect();
        let tokens = tokenizer.batch(&texts).unwrap();
        let mut forward = device.forward(&tokens, &labels, &[], true).unwrap();
        forward.activations.step = i as u64;
        forwards.push(forward);
    }
    assert_ne!(
        forwards[0].activations.seq, forwards[1].activations.seq,
        "the batches should pad to different lengths"
    );
    let admission = Admission::check(&hello, StepCaps::default()).unwrap();
    Some((forwards, admission))
}

/// Replies of one shared top (each a fresh copy of `top`) to `steps`, trained together.
fn replies(top: &super::Top, admission: Admission, steps: &[&Forward]) -> Vec<StepReply> {
    let device = ComputeBackend::Flex.training_device();
    let mut shared = SharedTop::with_top(
        top.clone(),
        &device,
        admission.cut,
        admission.form,
        SCHEDULE,
    );
    let mut links: Vec<StepLink> = steps
        .iter()
        .map(|_| StepLink::new(admission).unwrap())
        .collect();
    let batch = links
        .iter_mut()
        .zip(steps)
        .map(|(link, f)| (link, &f.activations, f.tensor.as_slice()))
        .collect();
    shared.step_batch(batch)
}

/// The training device and the pretrained top above `admission`'s cut (head seeded 7),
/// copied for each run so every run starts from the same weights.
fn pretrained_top(admission: Admission) -> (burn::tensor::Device, super::Top) {
    let device = ComputeBackend::Flex.training_device();
    let model = MiniLm::load(&model_dir(), &device).unwrap();
    let top = top_of(
        model,
        &device,
        admission.cut,
        admission.form,
        TopTraining::Shared,
        7,
    )
    .unwrap();
    (device, top)
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn devices_batched_on_a_shared_top_get_the_gradients_of_separate_steps() {
    let Some((forwards, admission)) = forwards() else {
        return;
    };
    let (_, top) = pretrained_top(admission);
    let together = replies(&top, admission, &[&forwards[0], &forwards[1]]);
    assert_eq!(together.len(), 2);
    for (forward, batched) in forwards.iter().zip(together) {
        let alone = replies(&top, admission, &[forward]).remove(0).unwrap();
        let batched = batched.unwrap();
        assert_eq!(batched.0.step, forward.activations.step);
        let (loss_alone, loss_batched) = (alone.0.loss, batched.0.loss);
        assert!(
            (loss_alone - loss_batched).abs() <= 1e-5 * loss_alone.abs().max(1.0),
            "loss {loss_alone} alone, {loss_batched} batched"
        );
        let (g_alone, g_batched) = (floats(&alone.1), floats(&batched.1));
        let tokens: usize = forward
            .activations
            .seq_lens
            .iter()
            .map(|&l| usize::from(l))
            .sum();
        assert_eq!(g_alone.len(), tokens * 384);
        assert_eq!(g_batched.len(), g_alone.len());
        let scale = g_alone.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "an all-zero cut gradient");
        let worst = g_alone
            .iter()
            .zip(&g_batched)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "cut gradients differ by {worst} (largest {scale})"
        );
    }
}

#[test]
fn a_bad_step_in_a_batch_is_refused_alone() {
    let Some((mut forwards, admission)) = forwards() else {
        return;
    };
    let (_, top) = pretrained_top(admission);
    forwards[1].activations.labels[0] = 7;
    let replies = replies(&top, admission, &[&forwards[0], &forwards[1]]);
    let (good, bad) = (&replies[0], &replies[1]);
    assert!(
        good.as_ref()
            .is_ok_and(|(g, t)| g.step == 0 && !t.is_empty()),
        "{good:?}"
    );
    assert!(
        bad.as_ref().is_err_and(|e| e.contains("label 7")),
        "{bad:?}"
    );
}

#[test]
fn a_shared_top_resumed_from_its_snapshot_goes_on_where_it_was() {
    let Some((forwards, admission)) = forwards() else {
        return;
    };
    let (device, top) = pretrained_top(admission);
    let shared = |top: &super::Top| {
        SharedTop::with_top(
            top.clone(),
            &device,
            admission.cut,
            admission.form,
            SCHEDULE,
        )
    };
    let train = |shared: &mut SharedTop, forward: &Forward| {
        let mut link = StepLink::new(admission).unwrap();
        let reply = shared.step_batch(vec![(&mut link, &forward.activations, &forward.tensor)]);
        reply.into_iter().next().unwrap().unwrap().0.loss
    };
    let mut original = shared(&top);
    train(&mut original, &forwards[0]);
    let dir = std::env::temp_dir().join(format!("tandem-shared-top-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shared-top.snap");
    original.save_snapshot(&path).unwrap();
    let saved = super::snapshot::TrainerSnapshot::load(&path, super::snapshot::TOP_MAGIC)
        .unwrap()
        .unwrap();
    // A fresh top (as a restarted cloud makes) resumed from the file.
    let mut resumed = shared(&top);
    resumed.resume(saved).unwrap();
    assert_eq!(resumed.updates(), 1);
    let (a, b) = (
        train(&mut original, &forwards[1]),
        train(&mut resumed, &forwards[1]),
    );
    let fresh = train(&mut shared(&top), &forwards[1]);
    assert!((a - b).abs() <= 1e-5, "loss {a} going on, {b} resumed");
    assert!(
        (a - fresh).abs() > 1e-4,
        "the first update changed nothing: {a} vs {fresh}"
    );
    // A snapshot of a top at another cut is refused.
    let saved = super::snapshot::TrainerSnapshot::load(&path, super::snapshot::TOP_MAGIC)
        .unwrap()
        .unwrap();
    let mut other = SharedTop::with_top(
        top.clone(),
        &device,
        admission.cut + 1,
        admission.form,
        SCHEDULE,
    );
    let refused = other.resume(saved).expect_err("refused");
    assert!(refused.contains("another cut"), "{refused}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 30 item 5: one device's crafted cut tensor (finite values, scaled up until
/// the top's forward or backward overflows) must not turn the shared top's weights
/// non-finite for every device: the step that would is refused, and an honest device's
/// next step still gets a finite loss and gradient.
#[test]
fn a_crafted_step_cannot_poison_the_shared_top() {
    let Some((forwards, admission)) = forwards() else {
        return;
    };
    let (device, top) = pretrained_top(admission);
    let mut shared = SharedTop::with_top(top, &device, admission.cut, admission.form, SCHEDULE);
    let honest = &forwards[0];
    for scale in [1e4f32, 1e8, 1e12, 1e16, 1e19, 1e24, 1e30] {
        let crafted_activations = forwards[1].activations.clone();
        let crafted_tensor: Vec<u8> = floats(&forwards[1].tensor)
            .iter()
            .flat_map(|v| (v * scale).to_le_bytes())
            .collect();
        let (mut a, mut b) = (
            StepLink::new(admission).unwrap(),
            StepLink::new(admission).unwrap(),
        );
        let replies = shared.step_batch(vec![
            (&mut a, &honest.activations, &honest.tensor),
            (&mut b, &crafted_activations, &crafted_tensor),
        ]);
        if let Ok((gradient, tensor)) = &replies[1] {
            assert!(
                floats(tensor).iter().all(|v| v.is_finite()),
                "scale {scale}: a non-finite cut gradient went back (loss {})",
                gradient.loss
            );
        }
        let mut link = StepLink::new(admission).unwrap();
        let after = shared
            .step_batch(vec![(&mut link, &honest.activations, &honest.tensor)])
            .remove(0)
            .unwrap_or_else(|e| panic!("scale {scale}: the honest step was refused: {e}"));
        assert!(
            after.0.loss.is_finite() && floats(&after.1).iter().all(|v| v.is_finite()),
            "scale {scale}: the shared top is poisoned (honest loss {})",
            after.0.loss
        );
    }
}
