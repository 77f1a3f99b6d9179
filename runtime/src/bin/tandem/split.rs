//! `tandem split`: split fine-tuning of all-MiniLM-L6-v2 with a tandem-cloud peer.

use crate::split_plot::{self, Curve};
use crate::step_log::StepLog;
use crate::{ConnectArgs, client_config, open_link};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use tandem_runtime::data::rotten_tomatoes::{self, RottenTomatoes};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{self, TextTokenizer};
use tandem_runtime::model::split::device::{DeviceSetup, DeviceTrainer};
use tandem_runtime::model::split::run::{
    self, HeldOut, RunConfig, RunEvent, RunPosition, RunReport,
};
use tandem_runtime::model::split::{LinkCodec, LrSchedule, Mode};
use tandem_runtime::wire::Capabilities;

#[derive(Args)]
pub(crate) struct SplitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Transformer layers on this device (1..=5); the cloud runs the rest.
    #[arg(long, default_value_t = 2)]
    cut: usize,
    /// Which device layers train.
    #[arg(long, value_enum, default_value_t)]
    mode: Mode,
    /// What crosses the cut and how it is encoded: identity, f16, int8,
    /// lowrank:r=32,bits=8 (PowerSGD factors of each batch's hidden states), topk:ratio=0.01,
    /// dct:keep=0.1, sft:r=16,bits=8 (the SFT code: the cut layer's feed-forward
    /// expansion W1 factored, as the SFT authors do) or sft-w2:r=16,bits=8 (its output
    /// projection W2 factored).
    #[arg(long, default_value = "lowrank:r=32,bits=8", value_parser = LinkCodec::parse)]
    codec: LinkCodec,
    /// Training steps.
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Train for this many passes over the training reviews instead (each in a fresh
    /// order); overrides --steps.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    epochs: Option<u64>,
    /// Reviews per step (1..=256, the cloud's bound).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch_size: u16,
    /// Tokens per review at most ([CLS] and [SEP] included; 2..=512, the model's
    /// positions).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(2..=512))]
    max_len: u16,
    /// CPU backend for the device layers.
    #[arg(long, value_enum, default_value_t)]
    backend: ComputeBackend,
    /// Peak learning rate of the device layers (AdamW; train-bottom and lora-bottom).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Warm-up steps of the learning rate.
    #[arg(long, default_value_t = 30)]
    warmup: u64,
    /// LoRA rank (lora-bottom; 1..=16).
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// Evaluate on the dev split every this many steps.
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Dev reviews per evaluation (0: all 1,300 or so).
    #[arg(long, default_value_t = 400)]
    dev_limit: usize,
    /// Held-out reviews for the final accuracy (0: all).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// The final accuracy's reviews: test, or dev-and-test (2,531 reviews, for comparing
    /// runs).
    #[arg(long, value_enum, default_value_t)]
    held_out: HeldOut,
    /// Seeds the training order and the LoRA adapters.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Metrics of every step and evaluation, as JSON.
    #[arg(long, default_value = "tandem-split.json", value_name = "FILE")]
    metrics: PathBuf,
    /// Plot of dev accuracy against cumulative bytes sent, as PNG.
    #[arg(long, default_value = "tandem-split.png", value_name = "FILE")]
    plot: PathBuf,
    /// This run's name in the metrics and in the legend of plots that compare it.
    #[arg(long, default_value = "this run")]
    label: String,
    /// The metrics file of an earlier run to draw beside this one in the plot (at most 3).
    #[arg(long = "plot-with", value_name = "FILE")]
    plot_with: Vec<PathBuf>,
    /// The run's checkpoint (device layers, optimizer and codec state, step), written
    /// every --checkpoint-every steps and at the end
    /// [default: $TANDEM_CACHE/checkpoints/split-NODE.ckpt].
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Steps between checkpoints (the cloud snapshots this device's top at the same
    /// steps).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Frozen bottom: send each training review's code once and its id afterwards (the
    /// cloud keeps the codes, within its --code-cache-mib; EcoFed).
    #[arg(long)]
    cache_codes: bool,
    /// Continue the run in --checkpoint where it stopped (same flags), with the cloud's
    /// top of that run at that step; without a checkpoint, start a new run.
    #[arg(long)]
    resume: bool,
    /// Append each trained step's index and loss to FILE as it completes (and where
    /// each process started): the history `cargo xtask reliability crash` checks.
    #[arg(long, value_name = "FILE")]
    step_log: Option<PathBuf>,
    /// Model directory [default: $TANDEM_CACHE/minilm].
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// The Rotten Tomatoes corpus [default: $TANDEM_CACHE/data/rotten_tomatoes_corpus_full.csv.bz2].
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
}

pub(crate) fn run(args: SplitArgs) -> Result<()> {
    if args.cache_codes && args.mode.wants_gradient() {
        anyhow::bail!(
            "--cache-codes needs --mode frozen-bottom: a trained bottom's code of a review changes every step"
        );
    }
    // The runs to compare with are read first: a bad file costs a line, not a run.
    if args.plot_with.len() > split_plot::MAX_COMPARED {
        anyhow::bail!(
            "--plot-with {} times: a plot compares at most {} earlier runs",
            args.plot_with.len(),
            split_plot::MAX_COMPARED
        );
    }
    let compared = args
        .plot_with
        .iter()
        .map(|path| Curve::read(path))
        .collect::<Result<Vec<_>>>()?;
    let model_dir = args.model_dir.clone().unwrap_or_else(minilm::model_dir);
    let data = RottenTomatoes::load(
        &args
            .data
            .clone()
            .unwrap_or_else(rotten_tomatoes::default_path),
    )?;
    let tokenizer = TextTokenizer::load(&model_dir, usize::from(args.max_len))?;
    let batch_size = usize::from(args.batch_size);
    let steps = match args.epochs {
        Some(epochs) => epochs * data.train.len().div_ceil(batch_size) as u64,
        None => args.steps,
    };
    let setup = DeviceSetup {
        cut: args.cut,
        mode: args.mode,
        codec: args.codec,
        lora_rank: args.lora_rank,
        schedule: LrSchedule {
            peak: args.lr,
            warmup: args.warmup,
            total: steps,
        },
        seed: args.seed,
        batch_size,
        max_len: usize::from(args.max_len),
    };
    let mut trainer = DeviceTrainer::new(&model_dir, args.backend, setup)?;
    let (node, config) = client_config(&args.connect)?;
    let checkpoint = args.checkpoint.clone().unwrap_or_else(|| {
        tandem_runtime::paths::cache_dir()
            .join("checkpoints")
            .join(format!("split-{node}.ckpt"))
    });
    let resumed = if args.resume {
        trainer.resume(&checkpoint)?
    } else {
        None
    };
    let position = match resumed {
        Some((run, step)) => {
            eprintln!(
                "resuming run {run:016x} at step {step} of {steps} from {}",
                checkpoint.display()
            );
            RunPosition::resumed(run, step, args.checkpoint_every)
        }
        None => {
            if args.resume {
                eprintln!(
                    "no checkpoint at {}: starting a new run",
                    checkpoint.display()
                );
            }
            RunPosition::fresh(args.checkpoint_every)
        }
    };
    let mut step_log = args
        .step_log
        .as_deref()
        .map(|path| StepLog::open(path, position.start_step))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let (endpoint, mut link) = open_link(
            &args.connect,
            node.clone(),
            config,
            Capabilities::SPLIT.union(Capabilities::RESUME),
            |hello| trainer.describe(hello, position),
            "a split session",
        )
        .await?;
        eprintln!(
            "split: cut {} ({} layers here), {}, codec {}, {} train / {} dev / {} test reviews",
            args.cut,
            args.cut,
            args.mode,
            codec_name(&args.codec),
            data.train.len(),
            data.dev.len(),
            data.test.len()
        );
        let bar = progress_bar(steps);
        bar.set_position(position.start_step);
        let config = RunConfig {
            steps,
            eval_every: args.eval_every,
            dev_limit: args.dev_limit,
            test_limit: args.test_limit,
            held_out: args.held_out,
            seed: args.seed,
            start_step: position.start_step,
            checkpoint_every: position.checkpoint_every,
            cache_codes: args.cache_codes,
        };
        let (mut up, mut down) = (0u64, 0u64);
        let report = run::run_reloading(
            &mut link,
            &mut trainer,
            &tokenizer,
            &data,
            config,
            |event| match event {
                RunEvent::Step(step) => {
                    if let Some(log) = &mut step_log
                        && let Err(err) = log.step(step.step, step.loss)
                    {
                        bar.suspend(|| eprintln!("{err:#}; step log stopped"));
                        step_log = None;
                    }
                    up += step.up_bytes as u64;
                    down += step.down_bytes as u64;
                    bar.set_message(format!(
                        "loss {:.3} | up {} down {} | {:.1}x",
                        step.loss,
                        bytes(up),
                        bytes(down),
                        step.ratio
                    ));
                    bar.inc(1);
                }
                // Printed even when the bar is hidden (stderr not a terminal).
                RunEvent::Dev(eval) => bar.suspend(|| {
                    eprintln!(
                        "step {:>5}: dev accuracy {:.2}% (loss {:.3}, {} reviews), {} sent",
                        eval.step,
                        eval.accuracy * 100.0,
                        eval.loss,
                        eval.examples,
                        bytes(eval.up_bytes)
                    )
                }),
                RunEvent::Testing { examples } => {
                    bar.finish_and_clear();
                    eprintln!("testing on {examples} reviews...");
                }
                RunEvent::Reloaded { step, reason } => {
                    bar.suspend(|| {
                        eprintln!(
                            "the cloud cannot resume the run here ({reason}): back to the checkpoint at step {step}"
                        )
                    });
                    bar.set_position(step);
                    if let Some(log) = &mut step_log
                        && let Err(err) = log.restart(step)
                    {
                        bar.suspend(|| eprintln!("{err:#}; step log stopped"));
                        step_log = None;
                    }
                }
                _ => {}
            },
            |trainer, done| Ok(trainer.save_checkpoint(&checkpoint, position.run, done)?),
            |trainer| {
                let saved = trainer.resume(&checkpoint)?;
                let every = position.checkpoint_every;
                Ok(saved.map(|(run, step)| RunPosition::resumed(run, step, every)))
            },
        )
        .await;
        link.close();
        endpoint.wait_idle().await;
        Ok::<_, anyhow::Error>(report?)
    })?;
    finish(&args, &report, trainer.hidden(), compared)
}

fn finish(args: &SplitArgs, report: &RunReport, hidden: usize, compared: Vec<Curve>) -> Result<()> {
    let peak_rss_kib = tandem_runtime::memory::peak_rss_kib();
    let mut json = serde_json::to_value(report).context("cannot serialise the metrics")?;
    json["peak_rss_kib"] = peak_rss_kib.into();
    json["label"] = split_plot::label(&args.label).into();
    let json = serde_json::to_vec_pretty(&json).context("cannot serialise the metrics")?;
    tandem_runtime::paths::write_atomic(&args.metrics, &json, 0o644)
        .with_context(|| format!("cannot write {}", args.metrics.display()))?;
    let mut curves = vec![Curve::of(&args.label, &report.dev)];
    curves.extend(compared);
    let png = split_plot::png(&curves);
    tandem_runtime::paths::write_atomic(&args.plot, &png, 0o644)
        .with_context(|| format!("cannot write {}", args.plot.display()))?;
    let steps = report.steps.len().max(1) as f64;
    let mean =
        |f: &dyn Fn(&run::StepRecord) -> f64| report.steps.iter().map(f).sum::<f64>() / steps;
    let up = mean(&|s| s.up_bytes as f64);
    let identity = mean(&|s| (s.tokens * hidden * 4) as f64);
    println!(
        "per step: {:.0} B up, {:.0} B down; device {:.1} ms, encode {:.2} ms, network+cloud {:.1} ms, backward {:.1} ms",
        up,
        mean(&|s| s.down_bytes as f64),
        mean(&|s| s.compute_ms),
        mean(&|s| s.encode_ms),
        mean(&|s| s.round_trip_ms),
        mean(&|s| s.backward_ms),
    );
    println!(
        "metrics: {}, plot: {}; peak RSS {:.0} MiB",
        args.metrics.display(),
        args.plot.display(),
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "{} accuracy {:.2}% on {} reviews; uplink {:.1}x smaller than f32 hidden states ({:.0} B/step vs {:.0} B/step)",
        match args.held_out {
            HeldOut::Test => "test",
            HeldOut::DevAndTest => "dev+test",
        },
        report.test.accuracy * 100.0,
        report.test.examples,
        identity / up.max(1.0),
        up,
        identity
    );
    Ok(())
}

fn progress_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn codec_name(codec: &LinkCodec) -> String {
    format!("{:?} as {:?}", codec.form, codec.tensor)
}

fn bytes(n: u64) -> String {
    match n {
        0..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.2} MB", n as f64 / 1e6),
    }
}
