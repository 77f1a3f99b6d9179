//! Device and cloud trainers wired back to back (no network) on the real model.

use super::cloud::{Admission, CloudTrainer};
use super::device::{DeviceSetup, DeviceTrainer};
use super::{LinkCodec, LrSchedule, Mode, TopTraining};
use crate::model::ComputeBackend;
use crate::model::minilm::{MiniLm, ModelError, TextTokenizer, model_dir};
use crate::session::step_limits::StepCaps;
use crate::wire::{Capabilities, CodecDesc, Hello, NodeName, RunPlan};

const TEXTS: [(&str, u32); 8] = [
    ("a gorgeous, witty, seductive movie.", 1),
    ("the acting is dreadful and the plot is dull.", 0),
    ("one of the best films of the year.", 1),
    ("a tedious, lifeless mess.", 0),
    ("charming and funny from start to finish.", 1),
    ("it never rises above its silly premise.", 0),
    ("a moving, beautifully made story.", 1),
    ("boring, predictable and far too long.", 0),
];

/// The cached model's tokenizer (reviews of up to 32 tokens); `None`, after saying the
/// test skips (and failing in CI), when the model is not cached.
pub(super) fn cached_tokenizer() -> Option<TextTokenizer> {
    match TextTokenizer::load(&model_dir(), 32) {
        Err(ModelError::Missing { path }) => {
            crate::paths::skip_missing_cache(path.display());
            None
        }
        other => Some(other.unwrap()),
    }
}

/// Trains `steps` steps on the 8 snippets, the top trained as `top` says; returns the
/// first and last losses.
fn run(mode: Mode, codec: &str, top: TopTraining, steps: u64) -> Option<(f32, f32)> {
    let dir = model_dir();
    let tokenizer = cached_tokenizer()?;
    let schedule = LrSchedule {
        peak: 1e-3,
        warmup: 2,
        total: steps,
    };
    let setup = DeviceSetup {
        cut: 1,
        mode,
        codec: LinkCodec::parse(codec).unwrap(),
        lora_rank: 4,
        schedule,
        seed: 7,
        batch_size: TEXTS.len(),
        max_len: 32,
    };
    let mut device = DeviceTrainer::new(&dir, ComputeBackend::Flex, setup).unwrap();
    let mut hello = Hello::probe(NodeName::try_from("d1").unwrap(), Default::default());
    hello.capabilities = Capabilities::SPLIT;
    device.describe(&mut hello, super::run::RunPosition::fresh(0));
    let admission = Admission::check(&hello, StepCaps::default()).unwrap();
    assert_eq!(admission.gradient.is_some(), mode.wants_gradient());
    let training = ComputeBackend::Flex.training_device();
    let model = MiniLm::load(&dir, &training).unwrap();
    let mut cloud = CloudTrainer::new(model, &training, admission, top, schedule, 7).unwrap();
    let texts: Vec<&str> = TEXTS.iter().map(|t| t.0).collect();
    let labels: Vec<u32> = TEXTS.iter().map(|t| t.1).collect();
    let batch = tokenizer.batch(&texts).unwrap();
    let mut losses = Vec::new();
    for step in 0..steps {
        let mut forward = device.forward(&batch, &labels, &[], true).unwrap();
        forward.activations.step = step;
        let (gradient, gtensor) = cloud.step(&forward.activations, &forward.tensor).unwrap();
        assert_eq!(gradient.payload_len == 0, !mode.wants_gradient());
        device.apply_gradient(&gradient, &gtensor).unwrap();
        losses.push(gradient.loss);
    }
    Some((losses[0], *losses.last().unwrap()))
}

fn check(mode: Mode, codec: &str) {
    check_over(mode, codec, 8);
}

fn check_over(mode: Mode, codec: &str, steps: u64) {
    if let Some((first, last)) = run(mode, codec, TopTraining::PerDevice, steps) {
        assert!(last < first * 0.9, "{mode} {codec}: loss {first} -> {last}");
    }
}

#[test]
fn a_lora_top_on_frozen_upper_layers_learns() {
    let lora = TopTraining::Lora { rank: 8 };
    if let Some((first, last)) = run(Mode::FrozenBottom, "identity", lora, 8) {
        assert!(last < first * 0.9, "loss {first} -> {last}");
    }
}

#[test]
fn top_training_parses_per_device_shared_and_lora_ranks_only() {
    assert_eq!("per-device".parse(), Ok(TopTraining::PerDevice));
    assert_eq!("shared".parse(), Ok(TopTraining::Shared));
    assert_eq!("lora:16".parse(), Ok(TopTraining::Lora { rank: 16 }));
    for bad in ["lora:0", "lora:17", "lora:", "share", ""] {
        assert!(bad.parse::<TopTraining>().is_err(), "{bad}");
    }
}

/// `plan` with the step shape of batches of 4 reviews of 32 tokens.
fn shaped(plan: RunPlan) -> RunPlan {
    RunPlan {
        max_batch: 4,
        max_seq: 32,
        ..plan
    }
}

#[test]
fn frozen_bottom_identity_loss_falls() {
    check(Mode::FrozenBottom, "identity");
}

#[test]
fn train_bottom_lowrank_loss_falls() {
    check(Mode::TrainBottom, "lowrank:r=8,bits=8");
}

#[test]
fn lora_bottom_sft_w2_loss_falls() {
    check(Mode::LoraBottom, "sft-w2:r=16,bits=8");
}

/// The faithful (W1) code learns more slowly than the others: its loss stays near
/// ln 2 for the first 16 steps of this run and is near 0 by step 40.
#[test]
fn train_bottom_sft_loss_falls() {
    check_over(Mode::TrainBottom, "sft:r=16,bits=8", 40);
}

#[test]
fn the_cloud_admits_each_sft_form_by_name_and_refuses_others() {
    use super::{CutForm, SftWeight};
    use crate::model::minilm::MODEL_NAME;
    let mut hello = Hello::probe(NodeName::try_from("d1").unwrap(), Default::default());
    hello.capabilities = Capabilities::SPLIT;
    hello.model.cut = 2;
    hello.model.hidden = 16;
    hello.plan = shaped(RunPlan::default());
    for (suffix, weight) in [
        ("+sft-w1", Some(SftWeight::W1)),
        ("+sft-w2", Some(SftWeight::W2)),
        ("+sft", None),
    ] {
        hello.model.name =
            heapless::String::try_from(format!("{MODEL_NAME}{suffix}").as_str()).unwrap();
        match (Admission::check(&hello, StepCaps::default()), weight) {
            (Ok(admission), Some(weight)) => {
                assert_eq!(admission.form, CutForm::Sft { rank: 16, weight });
            }
            (Err(reason), None) => assert!(reason.contains("serves"), "{reason}"),
            (other, _) => panic!("{suffix}: {other:?}"),
        }
    }
}

#[test]
fn a_gradient_codec_the_cloud_cannot_encode_is_refused_at_hello() {
    let mut hello = Hello::probe(NodeName::try_from("d1").unwrap(), Default::default());
    hello.capabilities = Capabilities::SPLIT;
    hello.model.name = heapless::String::try_from(crate::model::minilm::MODEL_NAME).unwrap();
    hello.model.cut = 2;
    hello.model.hidden = 384;
    hello.plan = shaped(RunPlan::default());
    for (desc, accepted) in [
        (
            CodecDesc::LowRank {
                rank: 8,
                power_iters: 2,
                factor_bits: 8,
            },
            true,
        ),
        (
            CodecDesc::LowRank {
                rank: 65,
                power_iters: 2,
                factor_bits: 8,
            },
            false,
        ),
        (
            CodecDesc::LowRank {
                rank: 8,
                power_iters: 2,
                factor_bits: 4,
            },
            false,
        ),
        (
            CodecDesc::TopK {
                ratio_ppm: 2_000_000,
            },
            false,
        ),
    ] {
        hello.codecs.clear();
        hello.codecs.push(desc).unwrap();
        match Admission::check(&hello, StepCaps::default()) {
            Ok(admission) => {
                assert!(accepted, "{desc:?} accepted");
                assert_eq!(admission.gradient, Some(desc));
            }
            Err(reason) => {
                assert!(!accepted, "{desc:?} refused: {reason}");
                assert!(reason.starts_with("gradient codec"), "{reason}");
            }
        }
    }
}

#[test]
fn the_cloud_schedules_its_top_over_the_run_the_device_planned() {
    use super::cloud::MAX_PLANNED_STEPS;
    use crate::model::minilm::MODEL_NAME;
    use crate::wire::ModelDesc;
    let mut hello = Hello::probe(NodeName::try_from("d1").unwrap(), Default::default());
    hello.capabilities = Capabilities::SPLIT;
    hello.model = ModelDesc {
        name: heapless::String::try_from(MODEL_NAME).unwrap(),
        cut: 2,
        hidden: 384,
    };
    let cloud_own = LrSchedule {
        peak: 3e-4,
        warmup: 30,
        total: 330,
    };
    hello.plan = shaped(RunPlan {
        steps: 500,
        warmup: 50,
        ..RunPlan::default()
    });
    let top = Admission::check(&hello, StepCaps::default())
        .unwrap()
        .schedule(cloud_own);
    // The device's own schedule, at its own peak: the same shape, step for step.
    let device = LrSchedule {
        peak: 1e-4,
        warmup: 50,
        total: 500,
    };
    for step in [0, 1, 25, 49, 50, 51, 250, 498, 499, 600] {
        let (a, b) = (top.at(step) / 3e-4, device.at(step) / 1e-4);
        assert!((a - b).abs() < 1e-12, "step {step}: {a} vs {b}");
    }
    // A device that plans nothing gets the cloud's own schedule.
    hello.plan = shaped(RunPlan::default());
    assert_eq!(
        Admission::check(&hello, StepCaps::default())
            .unwrap()
            .schedule(cloud_own),
        cloud_own
    );
    // A short run whose warm-up outlasts it (`--steps 20`, warm-up 30) is scheduled as
    // the device schedules it; plans past the bound are refused with one line.
    hello.plan = shaped(RunPlan {
        steps: 20,
        warmup: 30,
        ..RunPlan::default()
    });
    let short = Admission::check(&hello, StepCaps::default())
        .unwrap()
        .schedule(cloud_own);
    assert_eq!((short.total, short.warmup), (20, 30));
    for (steps, warmup) in [(MAX_PLANNED_STEPS + 1, 0), (10, MAX_PLANNED_STEPS + 1)] {
        hello.plan = shaped(RunPlan {
            steps,
            warmup,
            ..RunPlan::default()
        });
        let err = Admission::check(&hello, StepCaps::default()).unwrap_err();
        assert!(err.contains("warm-up"), "{err}");
    }
}
