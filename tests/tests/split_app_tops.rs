//! The split application's tops, without a network: a device's top freed (idle, or
//! after a failure) refuses the process it served, whose step cache and top are gone,
//! and admits a new run; a device's LoRA top learns while another device's still starts
//! from the pretrained layers (the memory they share is measured by `cargo xtask bench
//! cloud`, not here); a shared top is one top every device trains, at one cut.
#![cfg(feature = "model")]

mod common;

use common::node;
use common::split::{cloud_settings, model_cached, trainer};
use tandem_cloud::split_app::{SplitApp, SplitSettings};
use tandem_cloud::{CloudApp, Refused};
use tandem_runtime::model::minilm::{self, TextTokenizer};
use tandem_runtime::model::split::run::RunPosition;
use tandem_runtime::model::split::{Mode, TopTraining};
use tandem_runtime::session::check::probe_activations;
use tandem_runtime::wire::{Capabilities, Hello, software_name};

/// burn's random state (which initialises each top's head and adapters) is global to
/// the process: the tests here take turns, so a top's initial weights depend only on
/// the seed the cloud sets before making it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What device `name` running `trainer`'s request at `position` says at Hello.
fn hello(name: &str, position: RunPosition) -> Hello {
    let mut hello = Hello::probe(node(name), software_name("tandem"));
    hello.capabilities = Capabilities::SPLIT;
    trainer(Mode::TrainBottom, "identity", 10).describe(&mut hello, position);
    hello
}

/// One training step of `name` on two reviews, through `app`; its loss.
fn step(app: &mut SplitApp, name: &str, step: u64) -> f32 {
    let mut device = trainer(Mode::TrainBottom, "identity", 10);
    let tokenizer = TextTokenizer::load(&minilm::model_dir(), 32).unwrap();
    let batch = tokenizer
        .batch(&["a warm, funny film", "dull and far too long"])
        .unwrap();
    let mut forward = device.forward(&batch, &[1, 0], &[], true).unwrap();
    forward.activations.step = step;
    let (gradient, _) = app
        .split_step(&node(name), &forward.activations, &forward.tensor)
        .expect("step trains");
    gradient.loss
}

#[test]
fn a_freed_top_refuses_its_old_process_and_admits_a_new_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !model_cached() {
        return;
    }
    let mut app = SplitApp::new(cloud_settings(10)).expect("model cached");
    let first = RunPosition::fresh(0);
    app.admit(&hello("pi", first)).expect("admitted");
    assert!(step(&mut app, "pi", 0).is_finite());
    app.forget(&node("pi"));
    // Refused so that the device goes back to its checkpoint.
    match app.admit(&hello("pi", first)) {
        Err(Refused::ResumeRefused(reason)) => assert!(reason.contains("checkpoint"), "{reason}"),
        other => panic!("expected ResumeRefused, got {other:?}"),
    }
    assert!(
        app.split_step(&node("pi"), &probe_activations(), &[])
            .is_err()
    );
    // Another process (a new run here) gets a fresh top.
    app.admit(&hello("pi", RunPosition::fresh(0)))
        .expect("a new run is admitted");
    assert!(step(&mut app, "pi", 0).is_finite());
}

#[test]
fn lora_tops_train_each_devices_own_adapters() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !model_cached() {
        return;
    }
    let settings = SplitSettings {
        top: TopTraining::Lora { rank: 4 },
        ..cloud_settings(10)
    };
    let mut app = SplitApp::new(settings).expect("model cached");
    for name in ["a", "b"] {
        app.admit(&hello(name, RunPosition::fresh(0)))
            .expect("admitted");
    }
    // Device a trains three steps on the batch; b's first step still sees the
    // pretrained layers and a fresh head of its own: the same loss as a's first.
    let a: Vec<f32> = (0..3).map(|s| step(&mut app, "a", s)).collect();
    let b = step(&mut app, "b", 0);
    assert!(a[2] < a[0], "device a's loss falls: {a:?}");
    assert!((b - a[0]).abs() < 1e-4, "b {b} against a's first {}", a[0]);
}

#[test]
fn a_shared_top_is_one_top_that_every_device_trains() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !model_cached() {
        return;
    }
    let settings = SplitSettings {
        top: TopTraining::Shared,
        batch_tokens: 4096,
        ..cloud_settings(10)
    };
    let mut app = SplitApp::new(settings).expect("model cached");
    assert_eq!(app.batch_tokens(), 4096);
    for name in ["a", "b"] {
        app.admit(&hello(name, RunPosition::fresh(0)))
            .expect("admitted");
    }
    // Device a trains three steps; b's first step sees the top a trained, on the same
    // batch: its loss is below a's first (with a top of its own it would equal it).
    let a: Vec<f32> = (0..3).map(|s| step(&mut app, "a", s)).collect();
    let b = step(&mut app, "b", 0);
    assert!(a[2] < a[0], "device a's loss falls: {a:?}");
    assert!(b < a[0] - 1e-3, "b {b} against a's first {}", a[0]);
    // One top, one cut: a device that asks for another is refused with why.
    let mut other = hello("c", RunPosition::fresh(0));
    other.model.cut += 1;
    match app.admit(&other) {
        Err(Refused::Unserved(reason)) => {
            assert!(reason.contains("shared by all devices"), "{reason}")
        }
        other => panic!("expected Unserved, got {other:?}"),
    }
}
