//! `tandem load`: many split devices in one process against one cloud, for `cargo xtask
//! bench cloud`. Each device has its own certificate, QUIC connection and Hello (a
//! train-bottom run at `--cut`, identity both ways) and sends the same real MiniLM
//! batch (the first `--batch-size` training reviews through the bottom layers, computed
//! once) as its steps, one at a time, timing each until its gradient arrives.

use super::{ConnectArgs, client_config, open_link};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tandem_runtime::data::rotten_tomatoes::{self, RottenTomatoes};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{self, TextTokenizer};
use tandem_runtime::model::split::device::{DeviceSetup, DeviceTrainer};
use tandem_runtime::model::split::run::RunPosition;
use tandem_runtime::model::split::{LinkCodec, LrSchedule, Mode};
use tandem_runtime::session::split::{SplitConfig, SplitDevice};
use tandem_runtime::transport::link::DeviceLink;
use tandem_runtime::wire::{Activations, Capabilities};

/// `tandem load`'s command line.
#[derive(Args)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Devices, named `<node>-0`, `<node>-1`, ... (each needs its certificate:
    /// `tandem-cloud ca issue --node <node>-i`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    devices: u16,
    /// Steps each device sends.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    steps: u64,
    /// Layers on the devices (1..=5).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=5))]
    cut: u8,
    /// Reviews per step.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch_size: u16,
    /// Hostile devices beside the honest ones (`<node>-hostile-0`, ...): each sends,
    /// on stream after stream until the honest devices are done, steps past its declared
    /// shape, a low-rank payload announcing more than its codec makes, kinds the cloud
    /// does not serve or that travel the other way, and garbage.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    hostile: u16,
}

/// One device's step latencies, in ms.
struct DeviceTimes(Vec<f64>);

pub(crate) fn run(args: LoadArgs) -> Result<()> {
    let model_dir = minilm::model_dir();
    let data = RottenTomatoes::load(&rotten_tomatoes::default_path())?;
    let tokenizer = TextTokenizer::load(&model_dir, 64)?;
    let batch_size = usize::from(args.batch_size);
    let setup = DeviceSetup {
        cut: usize::from(args.cut),
        mode: Mode::TrainBottom,
        codec: LinkCodec::parse("identity").map_err(anyhow::Error::msg)?,
        lora_rank: 8,
        schedule: LrSchedule {
            peak: 1e-4,
            warmup: 0,
            total: args.steps,
        },
        seed: 1,
        batch_size,
        max_len: 64,
    };
    let mut trainer = DeviceTrainer::new(&model_dir, ComputeBackend::default(), setup)?;
    let reviews = data
        .train
        .get(..batch_size)
        .context("too few training reviews")?;
    let texts: Vec<&str> = reviews.iter().map(|r| r.text.as_str()).collect();
    let labels: Vec<u32> = reviews.iter().map(|r| r.label).collect();
    let forward = trainer.forward(&tokenizer.batch(&texts)?, &labels, &[], true)?;
    let (activations, tensor) = (forward.activations, forward.tensor);
    let prefix = args.connect.node.clone().unwrap_or_else(|| "load".into());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = Instant::now();
    let times: Vec<DeviceTimes> = runtime.block_on(async {
        let mut devices = Vec::new();
        for i in 0..args.devices {
            let name = format!("{prefix}-{i}");
            let (endpoint, link) = connect(&args.connect, name, &trainer).await?;
            let (activations, tensor) = (activations.clone(), tensor.clone());
            devices.push(tokio::spawn(async move {
                let times = send_steps(link, activations, tensor, args.steps).await;
                endpoint.wait_idle().await;
                times
            }));
        }
        let honest_done = Arc::new(AtomicBool::new(false));
        let mut attackers = Vec::new();
        for i in 0..args.hostile {
            let name = format!("{prefix}-hostile-{i}");
            let (endpoint, link) = connect(&args.connect, name, &trainer).await?;
            let (done, activations) = (honest_done.clone(), activations.clone());
            attackers.push(tokio::spawn(async move {
                let tally = super::load_hostile::attack(&link, &activations, &done).await;
                endpoint.close(0u32.into(), b"done");
                tally
            }));
        }
        let mut times = Vec::new();
        for device in devices {
            times.push(device.await.context("a device task failed")??);
        }
        honest_done.store(true, Ordering::Relaxed);
        for attacker in attackers {
            let tally = attacker.await.context("a hostile task failed")?;
            println!(
                "hostile: {} attacks, {} refused by the cloud",
                tally.sent, tally.refused
            );
        }
        Ok::<_, anyhow::Error>(times)
    })?;
    report(&times, started.elapsed());
    Ok(())
}

/// Device `name`'s split link to the cloud of `args`, asking what `trainer` would.
async fn connect(
    args: &ConnectArgs,
    name: String,
    trainer: &DeviceTrainer,
) -> Result<(quinn::Endpoint, DeviceLink)> {
    let mut connect = args.clone();
    connect.node = Some(name);
    let (node, config) = client_config(&connect)?;
    open_link(
        &connect,
        node,
        config,
        Capabilities::SPLIT,
        |hello| trainer.describe(hello, RunPosition::fresh(0)),
        "a split session",
    )
    .await
}

/// Sends `steps` steps of the same batch on `link`, one at a time; their latencies.
async fn send_steps(
    mut link: DeviceLink,
    activations: Activations,
    tensor: Vec<u8>,
    steps: u64,
) -> Result<DeviceTimes> {
    let config = SplitConfig {
        step_timeout: Duration::from_secs(600),
        ..SplitConfig::default()
    };
    let mut machine = SplitDevice::new(config, 0);
    let mut times = Vec::new();
    for _ in 0..steps {
        let sent = Instant::now();
        let (gradient, _) = link
            .split_step(&mut machine, activations.clone(), tensor.clone())
            .await?;
        if !gradient.loss.is_finite() {
            bail!("the cloud's top diverged");
        }
        times.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    link.close();
    Ok(DeviceTimes(times))
}

/// Prints each device's median and 99th percentile, and the run's line:
/// `load: devices N steps S wall_s W steps_per_s X p50_ms Y p99_ms Z fairness F`
/// (`fairness`: the worst device's p99 over the median device's p50).
fn report(times: &[DeviceTimes], wall: Duration) {
    let mut all: Vec<f64> = times.iter().flat_map(|t| t.0.iter().copied()).collect();
    let mut p50s = Vec::new();
    let mut worst_p99 = 0.0f64;
    for (i, DeviceTimes(own)) in times.iter().enumerate() {
        let mut own = own.clone();
        let (p50, p99) = (percentile(&mut own, 0.5), percentile(&mut own, 0.99));
        println!("device {i}: p50 {p50:.1} ms, p99 {p99:.1} ms");
        p50s.push(p50);
        worst_p99 = worst_p99.max(p99);
    }
    let median_p50 = percentile(&mut p50s, 0.5);
    println!(
        "load: devices {} steps {} wall_s {:.2} steps_per_s {:.3} p50_ms {:.1} p99_ms {:.1} fairness {:.2}",
        times.len(),
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64(),
        percentile(&mut all, 0.5),
        percentile(&mut all, 0.99),
        worst_p99 / median_p50,
    );
}

/// The `q` quantile of `values` (nearest rank; NaN when empty).
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}
