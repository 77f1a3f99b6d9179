//! `tandem-cloud`: the cloud half of tandem.
//!
//! Errors end the process with one `error: ...` line on stderr and exit code 1; bad
//! arguments exit with clap's code 2.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tandem_cloud::{HubSettings, Server};
use tandem_runtime::transport::TransportLimits;
use tandem_runtime::transport::pki::Pki;

#[cfg(feature = "model")]
mod fl_command;
#[cfg(feature = "model")]
mod fl_serve;

/// tandem cloud peer: serves tandem devices over QUIC (split fine-tuning top half,
/// federated aggregation).
#[derive(Parser)]
#[command(
    name = "tandem-cloud",
    version,
    propagate_version = true,
    after_help = "Example:\n  tandem-cloud ca init\n  tandem-cloud ca issue --node pi-01\n  tandem-cloud serve --listen 0.0.0.0:4433"
)]
struct Cli {
    /// More log output (default info: one line per device; -v debug, -vv trace).
    /// RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Listen for devices until Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Federated learning with many simulated clients in this process (same task, codec,
    /// validation and strategy code as `serve --app fl`).
    #[cfg(feature = "model")]
    Simulate(Box<fl_command::SimulateArgs>),
    /// Measures the cloud's memory per admitted split device for a `--top` choice (in
    /// this process, no network): `cargo xtask bench cloud` runs it.
    #[cfg(feature = "model")]
    MeasureTops(tandem_cloud::tops_memory::MeasureTopsArgs),
    /// Manage the certificate authority that devices are admitted by.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// UDP address to listen on, e.g. 0.0.0.0:4433 (port 0 picks a free port).
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,
    /// PKI directory made by `tandem-cloud ca init` [default: $TANDEM_CACHE/pki].
    #[arg(long, value_name = "DIR")]
    pki: Option<PathBuf>,
    /// Name sent to devices in HelloAck.
    #[arg(long, default_value = "tandem-cloud")]
    name: String,
    /// Threads that run devices' split steps (devices take turns on them; admissions
    /// and rounds never wait for a step).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Seconds a device may be away before the cloud frees what it holds for it (its top;
    /// a restarted device resumes from the top's snapshot).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 3600))]
    idle_release_s: u64,
    /// What to serve: `split` (MiniLM split fine-tuning), `fl` (federated rounds) or
    /// `hello` (connectivity only).
    #[arg(long, value_enum, default_value_t = App::Split)]
    app: App,
    #[command(flatten)]
    split: SplitArgs,
    #[cfg(feature = "model")]
    #[command(flatten)]
    fl: fl_serve::FlServeArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum App {
    /// Split fine-tuning of all-MiniLM-L6-v2 (needs the model cache).
    Split,
    /// The Hello exchange only.
    Hello,
    /// Federated learning rounds (`--task`, `--rounds`, `--strategy`, `--codec`, ...).
    Fl,
}

#[derive(Args)]
struct SplitArgs {
    /// CPU backend for the top halves.
    #[cfg(feature = "model")]
    #[arg(long, value_enum, default_value_t)]
    backend: tandem_runtime::model::ComputeBackend,
    /// Peak learning rate of the top halves (AdamW).
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Warm-up steps of each top's learning rate.
    #[arg(long, default_value_t = 30)]
    warmup: u64,
    /// Steps over which the learning rate decays linearly after warm-up.
    #[arg(long, default_value_t = 300)]
    decay_steps: u64,
    /// Seeds each top's classifier head (split), or the initial model and the sampling
    /// of devices (fl).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Model directory [default: $TANDEM_CACHE/minilm].
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Where each device's top is snapshotted at its checkpoints, so restarted devices
    /// (and a restarted cloud) resume them [default: $TANDEM_CACHE/split-tops].
    #[arg(long, value_name = "DIR")]
    split_state: Option<PathBuf>,
    /// MiB of a frozen bottom's codes kept per device, so later epochs send review ids
    /// only (`tandem split --cache-codes`; 0: none).
    #[arg(long, default_value_t = 1024)]
    code_cache_mib: usize,
    /// How each device's top trains: `per-device` (a whole top each, about 85 MB at cut
    /// 2), `lora:R` (LoRA adapters of rank R on one shared frozen copy of the upper
    /// layers, and a head, per device) or `shared` (one top that every device trains,
    /// SplitFed-style; all devices at the same cut and form).
    #[arg(long, default_value = "per-device")]
    top: tandem_runtime::model::split::TopTraining,
    /// With `--top shared`: the steps ready together train as one batch of up to this
    /// many padded tokens (sequences x the longest; at least one step; 0: one at a
    /// time). Default: 65,536 on a GPU backend, 0 on the CPU, where one large batch is
    /// slower than its steps one by one (BENCHMARKS.md).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1 << 24))]
    batch_tokens: Option<u64>,
    /// Tokens per split step at most (batch x padded length, as each device declares
    /// in its Hello); larger requests are refused at Hello.
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    max_step_tokens: u64,
    /// Attention scores per split step and layer at most (batch x length^2).
    #[arg(long, default_value_t = 1 << 22, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    max_step_attention: u64,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA and the cloud's certificate.
    Init {
        /// PKI directory [default: $TANDEM_CACHE/pki].
        #[arg(long, value_name = "DIR")]
        pki: Option<PathBuf>,
    },
    /// Issue a device certificate and add the device to the allowlist.
    Issue {
        /// The device's name (letters, digits, '-'); it must match the device's --node.
        #[arg(long)]
        node: String,
        /// PKI directory [default: $TANDEM_CACHE/pki].
        #[arg(long, value_name = "DIR")]
        pki: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Training frees and allocates the same large tensors every step: keep them in the
    // heap rather than mapping and faulting them in again (see `heap`'s documentation).
    tandem_kernels::heap::keep_freed_blocks();
    let cli = Cli::parse();
    // A server logs its connections by default: start one level above the device.
    tandem_runtime::logging::init(cli.verbose.saturating_add(1));
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => serve(*args),
        #[cfg(feature = "model")]
        Command::Simulate(args) => fl_command::run(*args),
        #[cfg(feature = "model")]
        Command::MeasureTops(args) => tandem_cloud::tops_memory::run(args),
        Command::Ca(CaCommand::Init { pki }) => {
            let pki = pki_at(pki);
            pki.init()?;
            println!(
                "created CA and cloud certificate in {}",
                pki.dir().display()
            );
            println!("devices trust {}", pki.ca_cert().display());
            println!("next: tandem-cloud ca issue --node NAME");
            Ok(())
        }
        Command::Ca(CaCommand::Issue { node, pki }) => {
            let pki = pki_at(pki);
            require_ca(&pki)?;
            let files = pki.issue(&node)?;
            println!(
                "issued {node}: {} and {}",
                files.cert.display(),
                files.key.display()
            );
            println!("added {node} to {}", pki.allowlist_path().display());
            Ok(())
        }
    }
}

fn pki_at(dir: Option<PathBuf>) -> Pki {
    dir.map_or_else(Pki::default_location, Pki::new)
}

fn require_ca(pki: &Pki) -> Result<()> {
    if !pki.is_initialised() {
        anyhow::bail!(
            "no CA in {}: run `tandem-cloud ca init{}` first",
            pki.dir().display(),
            if pki.dir() == Pki::default_location().dir() {
                String::new()
            } else {
                format!(" --pki {}", pki.dir().display())
            }
        );
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let pki = pki_at(args.pki);
    require_ca(&pki)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Register the signal handlers before announcing the address, so a script that
        // stops us right after reading the line still gets a graceful close.
        let shutdown = shutdown_signal()?;
        let server = Server::bind(args.listen, &pki, &args.name, &TransportLimits::default())?
            .with_hub(HubSettings {
                workers: usize::from(args.workers),
                idle_release: Duration::from_secs(args.idle_release_s),
                stop_when_over: false,
            });
        let addr = server
            .local_addr()
            .context("cannot read the bound address")?;
        // Scripts wait for this line (and read the port from it): flush it at once.
        println!(
            "tandem-cloud listening on {addr} (CA {})",
            pki.ca_cert().display()
        );
        std::io::stdout()
            .flush()
            .context("cannot write to stdout")?;
        match args.app {
            App::Hello => server.serve(shutdown).await,
            App::Split => serve_split(server, args.split, shutdown).await?,
            #[cfg(feature = "model")]
            App::Fl => {
                fl_serve::serve_fl(
                    server,
                    args.fl,
                    args.split.backend,
                    args.split.seed,
                    shutdown,
                )
                .await?
            }
            #[cfg(not(feature = "model"))]
            App::Fl => anyhow::bail!("this tandem-cloud was built without the `model` feature"),
        }
        Ok(())
    })
}

#[cfg(feature = "model")]
async fn serve_split(
    server: Server,
    args: SplitArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use tandem_cloud::split_app::{SplitApp, SplitSettings};
    use tandem_runtime::model::split::LrSchedule;
    let settings = SplitSettings {
        model_dir: args
            .model_dir
            .unwrap_or_else(tandem_runtime::model::minilm::model_dir),
        backend: args.backend,
        schedule: LrSchedule {
            peak: args.lr,
            warmup: args.warmup,
            total: args.warmup + args.decay_steps,
        },
        seed: args.seed,
        state_dir: Some(
            args.split_state
                .unwrap_or_else(|| tandem_runtime::paths::cache_dir().join("split-tops")),
        ),
        code_cache_bytes: args.code_cache_mib.saturating_mul(1 << 20),
        top: args.top,
        batch_tokens: args
            .batch_tokens
            .unwrap_or(if args.backend.is_gpu() { 1 << 16 } else { 0 }),
        step_caps: tandem_runtime::session::step_limits::StepCaps {
            tokens: args.max_step_tokens,
            attention: args.max_step_attention,
        },
    };
    let app = SplitApp::new(settings)?;
    let totals = app.totals();
    server.serve_app(app, shutdown).await;
    let totals = *totals
        .lock()
        .map_err(|_| anyhow::anyhow!("split app panicked"))?;
    if totals.steps > 0 {
        println!(
            "cloud compute: {} training steps, {:.2} ms/step",
            totals.steps,
            totals.train.as_secs_f64() * 1e3 / totals.steps as f64
        );
    }
    Ok(())
}

#[cfg(not(feature = "model"))]
async fn serve_split(
    _server: Server,
    _args: SplitArgs,
    _shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    anyhow::bail!("this tandem-cloud was built without the `model` feature: use --app hello")
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM; the handlers are installed
/// before it returns.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}
