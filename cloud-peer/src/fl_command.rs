//! `tandem-cloud simulate`: the command line around [`tandem_cloud::fl::simulate`].

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use tandem_cloud::fl::accountant::calibrate_noise;
use tandem_cloud::fl::adapt::{self, Profiles};
use tandem_cloud::fl::byzantine::Byzantine;
use tandem_cloud::fl::central_dp::{DpSettings, check_run};
use tandem_cloud::fl::record::{RoundRecord, identity_update_bytes, plot_png, summary};
use tandem_cloud::fl::round_bounds::MedianCaps;
use tandem_cloud::fl::secure::SecAggConfig;
use tandem_cloud::fl::simulate::{Devices, Simulation, SimulationConfig};
use tandem_cloud::fl::strategy::StrategySpec;
use tandem_cloud::fl::validate::NormBound;
use tandem_runtime::data::fashion_mnist::{CLASSES, FashionMnist};
use tandem_runtime::data::partition::Partition;
use tandem_runtime::data::rotten_tomatoes::RottenTomatoes;
use tandem_runtime::fl::fmnist::Fmnist;
use tandem_runtime::fl::sentiment::{self, Reviews, Sentiment};
use tandem_runtime::fl::task::{LocalConfig, Task};
use tandem_runtime::model::ComputeBackend;

/// The federated tasks.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskName {
    /// LeNet-5 on Fashion-MNIST.
    Fmnist,
    /// MiniLM's LoRA adapters and a head on Rotten Tomatoes, one client per movie.
    Sentiment,
}

/// The reviews a sentiment run is evaluated on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    /// The development movies (for choosing settings).
    Dev,
    /// The test movies (the figure to report).
    Test,
}

/// `tandem-cloud simulate` flags.
#[derive(Args)]
pub struct SimulateArgs {
    /// The task.
    #[arg(long, value_enum, default_value_t = TaskName::Fmnist)]
    task: TaskName,
    /// Simulated clients [default: 100 for fmnist; every training movie, 409, for
    /// sentiment, where N takes the first N movies by name].
    #[arg(long)]
    clients: Option<usize>,
    /// Clients sampled per round.
    #[arg(long, default_value_t = 10)]
    clients_per_round: usize,
    /// Rounds to run.
    #[arg(long, default_value_t = 100)]
    rounds: u64,
    /// How the training set is split: iid, shards:K or dirichlet:ALPHA [default: iid]
    /// (fmnist; sentiment is split by movie).
    #[arg(long)]
    partition: Option<Partition>,
    /// Aggregation: fedavg, fedprox:mu=M, fedavgm, fedadam, fedyogi, fedadagrad, median,
    /// trimmed-mean[:beta=B], krum[:f=F], multi-krum[:f=F,m=M].
    #[arg(long, default_value = "fedavg")]
    strategy: StrategySpec,
    /// Update codec: identity, f16, int8, topk:ratio=F, lowrank:r=R[,bits=B], dct:keep=F,
    /// acp:r=R[,bits=B].
    #[arg(long, default_value = "identity")]
    codec: String,
    /// Local epochs per round.
    #[arg(long, default_value_t = 1)]
    local_epochs: u16,
    /// Local batch size.
    #[arg(long, default_value_t = 32)]
    batch: u16,
    /// Local SGD learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    /// Local SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Update L2 norm bound: NORM (clip to it) or NORM:refuse.
    #[arg(long)]
    clip: Option<NormBound>,
    /// Hostile clients: F:sign-flip[:X], F:scale:X or F:noise[:S].
    #[arg(long)]
    byzantine: Option<Byzantine>,
    /// The example count each hostile client claims (its FedAvg weight), up to 2^24
    /// [default: what it trained on].
    #[arg(long, requires = "byzantine", value_parser = clap::value_parser!(u64).range(1..=tandem_cloud::fl::validate::MAX_EXAMPLES))]
    byzantine_examples: Option<u64>,
    /// How far a round's updates may go past its medians, as on `serve --app fl`:
    /// weight=W,norm=N or off (the default here; `serve` bounds by weight=1,norm=1).
    #[arg(long, default_value_t = MedianCaps::OFF, conflicts_with = "secagg")]
    median_caps: MedianCaps,
    /// Central differential privacy.
    #[command(flatten)]
    dp: DpArgs,
    /// Secure aggregation of every round (the cloud sees only the sum):
    /// bits=B,clip=C[,neighbours=K][,threshold=T][,drop=F]; fixed-point updates of B bits
    /// clipped to C per value, K neighbours per device (all by default), T of them (a
    /// share) to rebuild a secret (a majority by default), F of each round's devices
    /// vanishing after sharing.
    #[arg(long, value_name = "SPEC")]
    secagg: Option<SecAggConfig>,
    /// Seed of the model, partition, sampling and batch orders.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads training clients side by side.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// CPU backend.
    #[arg(long, value_enum, default_value_t)]
    backend: ComputeBackend,
    /// sentiment: LoRA rank of the query and value adapters, 1..=16 [default: 8].
    #[arg(long)]
    lora_rank: Option<usize>,
    /// sentiment: the reviews the global model is evaluated on [default: test].
    #[arg(long, value_enum)]
    eval_split: Option<EvalSplit>,
    /// Rounds between evaluations of the global model (the last round is always
    /// evaluated).
    #[arg(long, default_value_t = 1)]
    eval_every: u64,
    /// Device classes the clients are drawn from (JSON: `{"classes": [{"name", "share",
    /// "step_ms", "uplink_kb_per_s"}]}`): each round, a client that cannot finish its
    /// local work and upload by --deadline-s is dropped as a straggler.
    #[arg(long, value_name = "FILE", requires = "deadline_s")]
    profiles: Option<PathBuf>,
    /// Simulated seconds a round gives its devices (with --profiles).
    #[arg(long, value_name = "SECONDS", requires = "profiles")]
    deadline_s: Option<f64>,
    /// Devices plan each round from their step time, uplink and the deadline: more
    /// compression first (top-k 10%, 3%, 1%), then fewer steps, to report in time.
    #[arg(long, requires = "profiles")]
    adapt: bool,
    /// Instead of federated rounds, the centralised baseline at the same examples seen:
    /// one model trained with the same local settings in one pass over as many examples
    /// as these --rounds would train on, drawn from all clients' data pooled.
    #[arg(long, conflicts_with_all = ["secagg", "profiles", "byzantine", "clip", "dp_noise", "dp_epsilon", "codec", "strategy", "eval_every"])]
    centralised: bool,
    /// Data: the Fashion-MNIST IDX directory [default: /usr/share/datasets/fashion-mnist]
    /// or the Rotten Tomatoes corpus [default: the cache's].
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Metrics JSON, rewritten after every round.
    #[arg(long, value_name = "FILE", default_value = "fl-simulation.json")]
    metrics: PathBuf,
    /// Plot of test accuracy against round and against uplink bytes, rewritten after
    /// every round.
    #[arg(long, value_name = "FILE", default_value = "fl-simulation.png")]
    plot: PathBuf,
}

impl SimulateArgs {
    /// `--partition`, or its default (fmnist's; sentiment refuses the flag).
    fn partition(&self) -> Partition {
        self.partition.unwrap_or(Partition::Iid)
    }

    /// `--lora-rank`, or its default (sentiment's; fmnist refuses the flag).
    fn lora_rank(&self) -> usize {
        self.lora_rank.unwrap_or(sentiment::NETWORK_RANK)
    }
}

pub fn run(args: SimulateArgs) -> Result<()> {
    if args.workers == 0 || args.workers > 64 {
        bail!("--workers {}: expected 1..=64", args.workers);
    }
    if args.rounds > 100_000 {
        bail!("--rounds {}: at most 100000", args.rounds);
    }
    match args.task {
        TaskName::Fmnist => {
            if args.lora_rank.is_some() || args.eval_split.is_some() {
                bail!("--lora-rank and --eval-split are for --task sentiment");
            }
            let task = Fmnist::new(args.backend);
            let data_dir = args.data.clone().unwrap_or_else(FashionMnist::default_dir);
            let data = FashionMnist::load(&data_dir)?;
            let parts = args.partition().assign(
                &data.train.labels,
                CLASSES,
                args.clients.unwrap_or(100),
                args.seed,
            )?;
            let clients: Vec<_> = parts.iter().map(|p| data.train.select(p)).collect();
            simulate(&args, &task, &clients, &data.test)
        }
        TaskName::Sentiment => {
            if args.partition.is_some() {
                bail!("--partition is for fmnist: sentiment's clients are its movies");
            }
            let (task, tokenizer) = Sentiment::load_cached(args.backend, args.lora_rank())?;
            let path = args
                .data
                .clone()
                .unwrap_or_else(tandem_runtime::data::rotten_tomatoes::default_path);
            let data = RottenTomatoes::load(&path)?;
            let mut clients = sentiment::by_movie(&tokenizer, &data.train)?;
            if let Some(n) = args.clients {
                if !(1..=clients.len()).contains(&n) {
                    bail!(
                        "--clients {n}: the training split has {} movies",
                        clients.len()
                    );
                }
                clients.truncate(n);
            }
            let eval = match args.eval_split.unwrap_or(EvalSplit::Test) {
                EvalSplit::Dev => &data.dev,
                EvalSplit::Test => &data.test,
            };
            let test = Reviews::tokenize(&tokenizer, eval)?;
            simulate(&args, &task, &clients, &test)
        }
    }
}

/// The simulation (or its centralised baseline) of `task` over `clients`.
fn simulate<T: Task>(
    args: &SimulateArgs,
    task: &T,
    clients: &[T::Data],
    test: &T::Data,
) -> Result<()> {
    let codec = tandem_runtime::fl::update_codec(&args.codec).map_err(anyhow::Error::msg)?;
    let q = args.clients_per_round as f64 / clients.len().max(1) as f64;
    let dp = args
        .dp
        .settings(q, args.rounds, args.clip, &args.strategy)?
        .map(|(settings, _)| settings);
    let mut local = LocalConfig {
        epochs: args.local_epochs,
        batch: args.batch,
        lr: args.lr,
        momentum: args.momentum,
        proximal_mu: 0.0,
        max_steps: None,
    };
    args.strategy.configure(&mut local);
    let config = SimulationConfig {
        per_round: args.clients_per_round,
        local,
        codec,
        strategy: args.strategy.clone(),
        bound: args.clip,
        byzantine: args.byzantine,
        byzantine_examples: args.byzantine_examples,
        median_caps: args.median_caps,
        seed: args.seed,
        workers: args.workers,
        dp,
        eval_every: args.eval_every,
        rounds: args.rounds,
        devices: devices(args)?,
        secagg: args.secagg,
    };
    let sim_devices = config.devices.clone();
    let mut sim = Simulation::new(task, clients, test, config)?;
    if args.centralised {
        return centralised(args, task.name(), &sim);
    }
    let identity_update = identity_update_bytes(task.layout());
    let partition = match args.task {
        TaskName::Fmnist => args.partition().to_string(),
        TaskName::Sentiment => "by movie".to_string(),
    };
    let run = RunFacts {
        task: task.name(),
        clients: clients.len(),
        partition: &partition,
        dp,
        identity_update,
    };
    println!(
        "simulating {} on {} clients ({partition}), {} per round, {} rounds, {}, codec {}, {} parameters",
        task.name(),
        clients.len(),
        args.clients_per_round,
        args.rounds,
        args.strategy,
        args.codec,
        task.layout().len()
    );
    let mut records: Vec<RoundRecord> = Vec::new();
    for _ in 0..args.rounds {
        if sim.privacy_exhausted() {
            println!(
                "stopping: one more round would spend more than epsilon {} (--dp-epsilon)",
                args.dp.dp_epsilon.unwrap_or(f64::NAN)
            );
            break;
        }
        let r = sim.run_round()?;
        println!("{}", r.line(r.round, args.rounds));
        records.push(r);
        write_metrics(args, &run, &records)?;
    }
    if let Some(line) = summary(&records, identity_update) {
        println!("{line}");
    }
    if let Some(devices) = &sim_devices {
        let reported: usize = records
            .iter()
            .map(|r| r.plans.iter().filter(|p| p.reports()).count())
            .sum();
        let sampled: usize = records.iter().map(|r| r.plans.len()).sum();
        println!(
            "devices ({}, deadline {} s): {:.1}% of the sampled devices reported in time",
            if devices.adapt {
                "adapting"
            } else {
                "not adapting"
            },
            devices.deadline_s,
            100.0 * reported as f64 / sampled.max(1) as f64
        );
        for line in adapt::summary(&devices.profiles, records.iter().flat_map(|r| &r.plans)) {
            println!("  {line}");
        }
    }
    println!(
        "metrics: {}, plot: {}",
        args.metrics.display(),
        args.plot.display()
    );
    Ok(())
}

/// Central differential privacy's flags (`simulate` and `serve --app fl`).
#[derive(Args)]
pub struct DpArgs {
    /// Central differential privacy (DP-FedAvg): Gaussian noise of this multiple of the
    /// --clip norm on the sum of the clipped updates, an unweighted mean over
    /// --clients-per-round, and epsilon reported every round. Needs --clip NORM.
    #[arg(long, value_name = "Z")]
    dp_noise: Option<f64>,
    /// Central DP within this epsilon: stop before a round that would spend more. Without
    /// --dp-noise, the smallest noise that lets all --rounds fit is chosen.
    #[arg(long, value_name = "EPSILON")]
    dp_epsilon: Option<f64>,
    /// The delta epsilon is reported at (with --dp-noise or --dp-epsilon).
    #[arg(long, default_value_t = 1e-5)]
    dp_delta: f64,
}

impl DpArgs {
    /// The settings, the noise calibrated to `--dp-epsilon` over `rounds` rounds at
    /// sampling rate `q` when `--dp-noise` is not given; checked against the clipping
    /// norm and the strategy (returned with the norm).
    pub(crate) fn settings(
        &self,
        q: f64,
        rounds: u64,
        clip: Option<NormBound>,
        strategy: &StrategySpec,
    ) -> Result<Option<(DpSettings, f32)>> {
        let clip = match clip {
            Some(NormBound::Clip(c)) => Some(c),
            _ => None,
        };
        let noise_multiplier = match (self.dp_noise, self.dp_epsilon) {
            (None, None) => return Ok(None),
            (Some(z), _) => z,
            (None, Some(target)) => {
                // Before calibrating: a run that cannot take DP is told so first.
                check_run(clip, strategy).map_err(anyhow::Error::msg)?;
                let valid = target > 0.0
                    && target.is_finite()
                    && self.dp_delta > 0.0
                    && self.dp_delta < 1.0;
                if !valid {
                    bail!(
                        "--dp-epsilon {target} --dp-delta {}: expected epsilon > 0 and delta in (0, 1)",
                        self.dp_delta
                    );
                }
                let z = calibrate_noise(q.min(1.0), rounds, self.dp_delta, target).with_context(
                    || format!("no noise multiplier up to 1000 keeps {rounds} rounds within epsilon {target}"),
                )?;
                println!(
                    "dp: noise multiplier {z:.3} keeps {rounds} rounds at sampling rate {q:.3} within epsilon {target} (delta {})",
                    self.dp_delta
                );
                z
            }
        };
        let settings = DpSettings {
            noise_multiplier,
            delta: self.dp_delta,
            target_epsilon: self.dp_epsilon,
        };
        let clip = settings.check(clip, strategy).map_err(anyhow::Error::msg)?;
        Ok(Some((settings, clip)))
    }
}

/// The device model of `--profiles`, `--deadline-s` and `--adapt`.
fn devices(args: &SimulateArgs) -> Result<Option<Devices>> {
    let (Some(path), Some(deadline_s)) = (&args.profiles, args.deadline_s) else {
        return Ok(None);
    };
    let profiles = Profiles::load(path)?;
    let (speed, bandwidth) = profiles.spread();
    println!(
        "devices: {} classes from {}, {speed:.1}x spread in step time and {bandwidth:.1}x in uplink, deadline {deadline_s} s{}",
        profiles.classes.len(),
        path.display(),
        if args.adapt { ", adapting" } else { "" }
    );
    Ok(Some(Devices {
        profiles,
        deadline_s,
        adapt: args.adapt,
    }))
}

/// `--centralised`: trains and evaluates the baseline, and writes its metrics.
fn centralised<T: Task>(args: &SimulateArgs, task: &str, sim: &Simulation<'_, T>) -> Result<()> {
    println!(
        "centralised baseline of {} rounds: one pass, batch {}, lr {}",
        args.rounds, args.batch, args.lr
    );
    let run = sim.centralised(args.rounds)?;
    println!(
        "centralised: {} examples (the federated rounds' count), {} steps, train loss {:.3}, test accuracy {:.2}% loss {:.3}, {:.1} s",
        run.examples,
        run.steps,
        run.train_loss,
        run.eval.accuracy * 100.0,
        run.eval.loss,
        run.seconds
    );
    let json = serde_json::json!({
        "task": task,
        "centralised": true,
        "rounds": args.rounds,
        "examples": run.examples,
        "steps": run.steps,
        "batch": args.batch,
        "lr": args.lr,
        "momentum": args.momentum,
        "seed": args.seed,
        "train_loss": run.train_loss,
        "accuracy": run.eval.accuracy,
        "loss": run.eval.loss,
        "seconds": run.seconds,
    });
    let bytes = serde_json::to_vec_pretty(&json).context("metrics JSON")?;
    tandem_runtime::paths::write_atomic(&args.metrics, &bytes, 0o644)
        .with_context(|| format!("cannot write {}", args.metrics.display()))
}

/// What a federated run's metrics say of it beside the flags.
struct RunFacts<'a> {
    task: &'static str,
    clients: usize,
    partition: &'a str,
    dp: Option<DpSettings>,
    identity_update: u64,
}

fn write_metrics(args: &SimulateArgs, run: &RunFacts, records: &[RoundRecord]) -> Result<()> {
    let (dp, identity_update) = (run.dp, run.identity_update);
    let json = serde_json::json!({
        "task": run.task,
        "clients": run.clients,
        "clients_per_round": args.clients_per_round,
        "partition": run.partition,
        "lora_rank": (args.task == TaskName::Sentiment).then(|| args.lora_rank()),
        "strategy": args.strategy.to_string(),
        "codec": args.codec,
        "local_epochs": args.local_epochs,
        "batch": args.batch,
        "lr": args.lr,
        "momentum": args.momentum,
        "seed": args.seed,
        "dp_noise": dp.map(|d| d.noise_multiplier),
        "dp_delta": dp.map(|d| d.delta),
        "clip": args.clip.map(|c| c.to_string()),
        "identity_update_bytes": identity_update,
        "profiles": args.profiles.as_ref().map(|p| p.display().to_string()),
        "deadline_s": args.deadline_s,
        "adapt": args.adapt,
        "secagg": args.secagg.map(|s| s.to_string()),
        "rounds": records,
    });
    let bytes = serde_json::to_vec_pretty(&json).context("metrics JSON")?;
    tandem_runtime::paths::write_atomic(&args.metrics, &bytes, 0o644)
        .with_context(|| format!("cannot write {}", args.metrics.display()))?;
    tandem_runtime::paths::write_atomic(&args.plot, &plot_png(records), 0o644)
        .with_context(|| format!("cannot write {}", args.plot.display()))
}
