//! `tandem-cloud serve --app fl`: the command line around [`tandem_cloud::fl::app`].

use crate::fl_command::{DpArgs, TaskName};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use tandem_cloud::fl::round_bounds::MedianCaps;
use tandem_cloud::fl::strategy::StrategySpec;
use tandem_cloud::fl::validate::NormBound;
use tandem_runtime::data::fashion_mnist::FashionMnist;
use tandem_runtime::data::rotten_tomatoes::RottenTomatoes;
use tandem_runtime::fl::fmnist::Fmnist;
use tandem_runtime::fl::sentiment::{self, Reviews, Sentiment};
use tandem_runtime::fl::task::LocalConfig;
use tandem_runtime::model::ComputeBackend;

/// `tandem-cloud serve --app fl` flags.
#[derive(Args)]
pub struct FlServeArgs {
    /// The federated task.
    #[arg(long, value_enum, default_value_t = TaskName::Fmnist)]
    task: TaskName,
    /// Rounds committed in the run (a restarted run continues up to this total; aborted
    /// rounds do not count).
    #[arg(long, default_value_t = 100)]
    rounds: u64,
    /// Devices per round, at most (a round starts once --min-updates of the joined devices
    /// are connected, and samples up to this many).
    #[arg(long, default_value_t = 10)]
    clients_per_round: usize,
    /// Updates a round needs by its deadline to commit [default: 80% of
    /// --clients-per-round, at least what the strategy needs]. A round starts once this
    /// many joined devices are connected.
    #[arg(long)]
    min_updates: Option<usize>,
    /// Rounds aborted in a row (too few updates by the deadline) after which the cloud
    /// starts no more rounds, saying who never reported. Aborted rounds do not count
    /// toward --rounds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_aborted_rounds: u32,
    /// Keep serving once the run is over (its last round committed, or the run stopped),
    /// telling each device that joins that it is over; by default the cloud tells its
    /// devices and exits 0.
    #[arg(long)]
    keep_serving: bool,
    /// The most examples a device may declare when it joins (its FedAvg weight; a
    /// device's count is fixed by its first Join of the run).
    #[arg(long, default_value_t = tandem_cloud::fl::validate::MAX_EXAMPLES,
          value_parser = clap::value_parser!(u64).range(1..=tandem_cloud::fl::validate::MAX_EXAMPLES))]
    max_examples: u64,
    /// How far a round's updates may go past its medians: weight=W (a weight at most W
    /// times the median weight), norm=N (scaled down to at most N times the median
    /// norm), or off.
    #[arg(long, default_value_t = MedianCaps::NETWORK)]
    median_caps: MedianCaps,
    /// Seconds devices have to report.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
    /// Aggregation (as for simulate).
    #[arg(long, default_value = "fedavg")]
    strategy: StrategySpec,
    /// Update codec (as for simulate).
    #[arg(long = "codec", default_value = "identity")]
    update_codec: String,
    /// Model codec down to the devices: identity (the full model each round), or f16 or
    /// int8 (a delta against the model each device acknowledged last).
    #[arg(long, default_value = "identity")]
    downlink: String,
    /// Local epochs per round.
    #[arg(long, default_value_t = 1)]
    local_epochs: u16,
    /// Local batch size.
    #[arg(long = "batch", default_value_t = 32)]
    local_batch: u16,
    /// Local SGD learning rate.
    #[arg(long, default_value_t = 0.01)]
    local_lr: f32,
    /// Update L2 norm bound: NORM (clip to it) or NORM:refuse.
    #[arg(long)]
    clip: Option<NormBound>,
    /// Central differential privacy (as for simulate; no amplification by sampling is
    /// claimed here, and the noise comes from the system's secure generator).
    #[command(flatten)]
    dp: DpArgs,
    /// Run state (global model, server optimiser, round) and metrics, committed after
    /// every round; a restarted cloud continues from it.
    #[arg(long, value_name = "DIR", default_value = "fl-state")]
    state: PathBuf,
    /// The test set: the Fashion-MNIST IDX directory [default:
    /// /usr/share/datasets/fashion-mnist] or the Rotten Tomatoes corpus (its test movies)
    /// [default: the cache's].
    #[arg(long = "fl-data", value_name = "PATH")]
    fl_data: Option<PathBuf>,
}

/// `serve --app fl`: the federated app of `--task`, served until `shutdown`.
pub async fn serve_fl(
    server: tandem_cloud::Server,
    args: FlServeArgs,
    backend: ComputeBackend,
    seed: u64,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let settings = fl_settings(&args, seed)?;
    let server = server.stopping_at_run_end(!args.keep_serving);
    match args.task {
        TaskName::Fmnist => {
            let dir = args.fl_data.unwrap_or_else(FashionMnist::default_dir);
            let test = tandem_runtime::data::fashion_mnist::load_split(&dir, "t10k")?;
            serve_task(server, Fmnist::new(backend), test, settings, shutdown).await
        }
        TaskName::Sentiment => {
            let (task, tokenizer) = Sentiment::load_cached(backend, sentiment::NETWORK_RANK)?;
            let path = args
                .fl_data
                .unwrap_or_else(tandem_runtime::data::rotten_tomatoes::default_path);
            let test = Reviews::tokenize(&tokenizer, &RottenTomatoes::load(&path)?.test)?;
            serve_task(server, task, test, settings, shutdown).await
        }
    }
}

/// Serves the federated app of `task` (scored on `test`) until `shutdown`, or the run's
/// end when the server stops there.
async fn serve_task<T: tandem_runtime::fl::task::Task + 'static>(
    server: tandem_cloud::Server,
    task: T,
    test: T::Data,
    settings: tandem_cloud::fl::app::FlSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()>
where
    T::Data: 'static,
{
    let app = tandem_cloud::fl::app::FlApp::new(task, test, settings)?;
    println!(
        "fl: {} rounds committed so far (the last round run: {})",
        app.committed(),
        app.round()
    );
    if let Some(line) = server.serve_app(app, shutdown).await {
        println!(
            "fl: {line}; its devices were told, and this cloud stops (--keep-serving keeps it up)"
        );
    }
    Ok(())
}

/// The settings of `serve --app fl`, checked.
fn fl_settings(args: &FlServeArgs, seed: u64) -> Result<tandem_cloud::fl::app::FlSettings> {
    use tandem_cloud::fl::app::FlSettings;
    let codec = tandem_runtime::fl::update_codec(&args.update_codec).map_err(anyhow::Error::msg)?;
    let downlink = tandem_runtime::fl::update_codec(&args.downlink)
        .map_err(anyhow::Error::msg)
        .and_then(|c| Ok(tandem_runtime::fl::downlink::model_codec(c)?))
        .with_context(|| format!("--downlink {}", args.downlink))?;
    if args.clients_per_round == 0 || args.clients_per_round > 10_000 {
        bail!(
            "--clients-per-round {}: expected 1..=10000",
            args.clients_per_round
        );
    }
    let min_updates = args
        .min_updates
        .unwrap_or_else(|| FlSettings::default_min_updates(args.clients_per_round, &args.strategy));
    if !(1..=args.clients_per_round).contains(&min_updates) {
        bail!("--min-updates {min_updates}: expected 1..=--clients-per-round");
    }
    if min_updates < args.strategy.min_updates() {
        bail!(
            "{} needs at least {} updates per round: raise --min-updates (now {min_updates})",
            args.strategy,
            args.strategy.min_updates()
        );
    }
    let mut local = LocalConfig {
        epochs: args.local_epochs,
        batch: args.local_batch,
        lr: args.local_lr,
        momentum: tandem_runtime::fl::client::MOMENTUM,
        proximal_mu: 0.0,
        max_steps: None,
    };
    args.strategy.configure(&mut local);
    local.check()?;
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("cannot create {}", args.state.display()))?;
    Ok(FlSettings {
        rounds: args.rounds,
        per_round: args.clients_per_round,
        min_updates,
        deadline: std::time::Duration::from_secs(args.deadline_secs.clamp(1, 86_400)),
        local,
        codec,
        downlink,
        strategy: args.strategy.clone(),
        bound: args.clip,
        dp: args
            .dp
            .settings(1.0, args.rounds, args.clip, &args.strategy)?,
        seed,
        state_dir: args.state.clone(),
        max_examples: args.max_examples,
        median_caps: args.median_caps,
        max_aborted: args.max_aborted_rounds,
    })
}
