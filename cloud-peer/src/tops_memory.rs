//! `tandem-cloud measure-tops`: the cloud's resident memory per admitted split device,
//! for each way of training the tops (`--top`). Devices are admitted in this process
//! with the Hello `tandem split` makes (`DeviceTrainer::describe`: train-bottom, identity
//! codec both ways, batches of 16 reviews of up to 64 tokens) and each trains a few steps on synthetic hidden
//! states, so its optimizer's moments exist; no network is involved.

use crate::CloudApp;
use crate::split_app::{SplitApp, SplitSettings};
use anyhow::{Result, anyhow};
use std::path::PathBuf;
use tandem_runtime::memory::rss_kib;
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm;
use tandem_runtime::model::split::device::{DeviceSetup, DeviceTrainer};
use tandem_runtime::model::split::run::RunPosition;
use tandem_runtime::model::split::{LinkCodec, LrSchedule, Mode, TopTraining};
use tandem_runtime::session::step_limits::StepCaps;
use tandem_runtime::wire::{Activations, Capabilities, CodecDesc, Hello, NodeName, software_name};

/// Reviews per synthetic step, and their tokens each (about the demo's mean).
const BATCH: u16 = 16;
const TOKENS: u16 = 27;
const HIDDEN: u16 = 384;

/// `measure-tops`'s command line.
#[derive(clap::Args)]
pub struct MeasureTopsArgs {
    /// How each device's top trains: per-device or lora:R.
    #[arg(long, default_value = "per-device")]
    top: TopTraining,
    /// Devices to admit, one after another.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=1024))]
    devices: u16,
    /// Training steps per device.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=100))]
    steps: u16,
    /// Layers on the devices (1..=5).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=5))]
    cut: u8,
    /// Model directory [default: $TANDEM_CACHE/minilm].
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
}

/// Admits the devices one by one, printing the resident set after each, and last
/// `tops_rss_per_device_mib: X`, the growth per device after the first.
pub fn run(args: MeasureTopsArgs) -> Result<()> {
    let settings = SplitSettings {
        model_dir: args.model_dir.unwrap_or_else(minilm::model_dir),
        backend: Default::default(),
        schedule: LrSchedule {
            peak: 3e-4,
            warmup: 30,
            total: 330,
        },
        seed: 1,
        state_dir: None,
        code_cache_bytes: 0,
        step_caps: StepCaps::default(),
        top: args.top,
        batch_tokens: 0,
    };
    let model_dir = settings.model_dir.clone();
    let mut app = SplitApp::new(settings)?;
    // The device whose request every simulated device makes (its bottom is loaded once,
    // before the first measurement).
    let device = DeviceTrainer::new(
        &model_dir,
        ComputeBackend::default(),
        DeviceSetup {
            cut: usize::from(args.cut),
            mode: Mode::TrainBottom,
            codec: LinkCodec::parse("identity").map_err(anyhow::Error::msg)?,
            lora_rank: 8,
            schedule: LrSchedule {
                peak: 1e-4,
                warmup: 30,
                total: 1000,
            },
            seed: 1,
            batch_size: usize::from(BATCH),
            max_len: 64,
        },
    )?;
    println!(
        "top {}: model loaded, rss {:.1} MiB",
        args.top,
        mib(rss_kib())
    );
    let mut after_first = 0;
    let mut last = 0;
    for i in 0..args.devices {
        let node = NodeName::try_from(format!("device-{i}").as_str())
            .map_err(|_| anyhow!("device name"))?;
        app.admit(&hello(node.clone(), &device))
            .map_err(|e| anyhow!("admitting {node}: {e}"))?;
        for step in 0..u64::from(args.steps) {
            let (activations, tensor) = synthetic_step(step);
            app.split_step(&node, &activations, &tensor)
                .map_err(|e| anyhow!("{node} step {step}: {e}"))?;
        }
        last = rss_kib();
        if i == 0 {
            after_first = last;
        }
        println!("devices {:4}: rss {:8.1} MiB", i + 1, mib(last));
    }
    let per_device = mib(last.saturating_sub(after_first)) / f64::from(args.devices - 1);
    println!("tops_rss_per_device_mib: {per_device:.2}");
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What device `node` sends to train: the Hello `tandem split` makes for `device`, a
/// new run.
fn hello(node: NodeName, device: &DeviceTrainer) -> Hello {
    let mut hello = Hello::probe(node, software_name("tandem"));
    hello.capabilities = Capabilities::SPLIT;
    device.describe(&mut hello, RunPosition::fresh(0));
    hello
}

/// A training step of `BATCH` reviews of `TOKENS` tokens: smooth synthetic hidden
/// states (the top's cost does not depend on their values), identity-coded.
fn synthetic_step(step: u64) -> (Activations, Vec<u8>) {
    let tokens = usize::from(BATCH) * usize::from(TOKENS);
    let tensor: Vec<u8> = (0..tokens * usize::from(HIDDEN))
        .flat_map(|i| ((i as f32 * 0.013 + step as f32).sin()).to_le_bytes())
        .collect();
    let activations = Activations {
        step,
        train: true,
        batch: BATCH,
        seq: TOKENS,
        hidden: HIDDEN,
        seq_lens: (0..BATCH).map(|_| TOKENS).collect(),
        labels: (0..BATCH).map(|i| u32::from(i % 2)).collect(),
        reviews: Default::default(),
        cached: false,
        codec: CodecDesc::Identity,
        payload_len: tensor.len() as u64,
    };
    (activations, tensor)
}
