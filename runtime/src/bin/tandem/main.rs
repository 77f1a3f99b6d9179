//! `tandem`: the device half of tandem.
//!
//! Errors end the process with one `error: ...` line on stderr and exit code 1; bad
//! arguments exit with clap's code 2.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tandem_runtime::transport::{self, TransportLimits, pki::Pki, tls::Identity};
use tandem_runtime::wire::NodeName;

/// tandem device runtime: fine-tunes models on this board together with a tandem-cloud
/// peer over QUIC.
#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    propagate_version = true,
    after_help = "Example:\n  tandem hello --cloud 10.0.0.2:4433 --node pi-01 --ca ca-cert.pem \\\n      --cert pi-01-cert.pem --key pi-01-key.pem"
)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to a cloud peer, exchange Hello/HelloAck, print the round-trip time.
    Hello(HelloArgs),
    /// Train a tiny model for a second to check that burn works on this machine.
    #[cfg(feature = "model")]
    Smoke(SmokeArgs),
    /// Fine-tune all-MiniLM-L6-v2 on Rotten Tomatoes together with a tandem-cloud peer
    /// (split learning): the bottom layers run here, the top in the cloud.
    #[cfg(feature = "model")]
    Split(Box<split::SplitArgs>),
    /// Take part in federated learning with a tandem-cloud peer: train locally on this
    /// device's data each round and send a compressed update.
    #[cfg(feature = "model")]
    Fl(Box<fl::FlArgs>),
    /// Many split devices in this process against one cloud, each sending the same real
    /// batch as its steps: the cloud's throughput, latency and fairness (`cargo xtask
    /// bench cloud`).
    #[cfg(feature = "model")]
    Load(Box<load::LoadArgs>),
    /// Attack a tandem-cloud you run (garbage, oversized and wrong-way frames, version
    /// and schema mismatches, stream and connection floods, slowloris, replayed updates,
    /// a revoked certificate) and print what it did about each
    /// (`cargo xtask reliability hostile`).
    Hostile(Box<hostile::HostileArgs>),
}

#[derive(Args)]
struct HelloArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    timeout: f64,
}

/// Where the cloud is and who this device is.
#[derive(Args, Clone)]
pub(crate) struct ConnectArgs {
    /// The cloud peer, HOST:PORT (e.g. 127.0.0.1:4433 or cloud.example.org:4433).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) cloud: String,
    /// The cloud's CA certificate (PEM) [default: $TANDEM_CACHE/pki/ca-cert.pem, where
    /// `tandem-cloud ca init` writes it on the same machine].
    #[arg(long, value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
    /// This device's certificate (PEM) from `tandem-cloud ca issue --node NAME`
    /// [default: $TANDEM_CACHE/pki/devices/NAME-cert.pem].
    #[arg(long, value_name = "PEM", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Its private key (PEM) [default: $TANDEM_CACHE/pki/devices/NAME-key.pem].
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Name the cloud's certificate must carry.
    #[arg(long, value_name = "NAME", default_value = transport::DEFAULT_SERVER_NAME)]
    pub(crate) server_name: String,
    /// This device's name, as in its certificate (default: the host name).
    #[arg(long)]
    pub(crate) node: Option<String>,
}

#[cfg(feature = "model")]
#[derive(Args)]
struct SmokeArgs {
    /// CPU backend to train on.
    #[arg(long, value_enum, default_value_t)]
    backend: tandem_runtime::model::ComputeBackend,
    /// Optimiser steps.
    #[arg(long, default_value_t = 300)]
    steps: usize,
}

#[cfg(feature = "model")]
mod fl;
mod hostile;
#[cfg(feature = "model")]
mod load;
#[cfg(feature = "model")]
mod load_hostile;
#[cfg(feature = "model")]
mod split;
mod split_plot;
#[cfg(feature = "model")]
mod step_log;

fn main() -> ExitCode {
    // Training frees and allocates the same large tensors every step: keep them in the
    // heap rather than mapping and faulting them in again (see `heap`'s documentation).
    tandem_kernels::heap::keep_freed_blocks();
    let cli = Cli::parse();
    tandem_runtime::logging::init(cli.verbose);
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
        Command::Hello(args) => hello(args),
        #[cfg(feature = "model")]
        Command::Smoke(args) => smoke(args),
        #[cfg(feature = "model")]
        Command::Split(args) => split::run(*args),
        #[cfg(feature = "model")]
        Command::Fl(args) => fl::run(*args),
        #[cfg(feature = "model")]
        Command::Load(args) => load::run(*args),
        Command::Hostile(args) => hostile::run(*args),
    }
}

fn hello(args: HelloArgs) -> Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| {
            format!(
                "--timeout must be a positive number of seconds, got {}",
                args.timeout
            )
        })?;
    let (node, config) = client_config(&args.connect)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (cloud, server_name) = (args.connect.cloud, args.connect.server_name);
    runtime.block_on(async {
        let peer = resolve(&cloud).await?;
        let endpoint = transport::client_endpoint(peer, config)?;
        let report = tokio::time::timeout(
            timeout,
            transport::hello(&endpoint, peer, &server_name, &node),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from {peer} within {:.1} s (is tandem-cloud serving there?)",
                timeout.as_secs_f64()
            )
        })?
        .with_context(|| format!("hello to {peer} failed"))?;
        endpoint.wait_idle().await;
        println!(
            "hello: {} ({}) at {peer}, protocol {}: round trip {:.3} ms \
             (handshake {:.3} ms, QUIC RTT estimate {:.3} ms)",
            report.peer,
            report.software,
            report.version,
            ms(report.round_trip),
            ms(report.handshake),
            ms(report.quic_rtt),
        );
        Ok(())
    })
}

/// The cloud's address, resolved.
pub(crate) async fn resolve(cloud: &str) -> Result<std::net::SocketAddr> {
    tokio::net::lookup_host(cloud)
        .await
        .with_context(|| format!("invalid cloud address '{cloud}' (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("cloud address '{cloud}' resolved to nothing"))
}

/// Resolves the cloud and opens a session link announcing `capabilities`, after
/// `describe` fills in the rest of the Hello (model, codecs); `job` names the session in
/// the error ("a split session").
#[cfg(feature = "model")]
pub(crate) async fn open_link(
    connect: &ConnectArgs,
    node: NodeName,
    config: quinn::ClientConfig,
    capabilities: tandem_runtime::wire::Capabilities,
    describe: impl FnOnce(&mut tandem_runtime::wire::Hello),
    job: &str,
) -> Result<(quinn::Endpoint, tandem_runtime::transport::link::DeviceLink)> {
    use tandem_runtime::transport::link::{DeviceLink, LinkTarget, ReconnectPolicy};
    let peer = resolve(&connect.cloud).await?;
    let endpoint = transport::client_endpoint(peer, config)?;
    let mut target = LinkTarget::new(peer, &connect.server_name, node, capabilities);
    describe(&mut target.hello);
    let link = DeviceLink::connect(endpoint.clone(), target, ReconnectPolicy::default())
        .await
        .with_context(|| format!("cannot start {job} with {peer}"))?;
    Ok((endpoint, link))
}

/// This device's name and TLS client configuration, from the PKI files (defaults in
/// the cache).
pub(crate) fn client_config(args: &ConnectArgs) -> Result<(NodeName, quinn::ClientConfig)> {
    let node = node_name(args.node.clone())?;
    let pki = Pki::default_location();
    let ca = args.ca.clone().unwrap_or_else(|| pki.ca_cert());
    if !ca.exists() {
        bail!(
            "no CA certificate at {}: pass --ca with the cloud's ca-cert.pem \
             (`tandem-cloud ca init` creates it)",
            ca.display()
        );
    }
    let device = pki.device_files(&node);
    let (cert, key) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => (device.cert, device.key),
    };
    if !cert.exists() {
        bail!(
            "no device certificate at {}: run `tandem-cloud ca issue --node {node}` on the \
             cloud and pass its files with --cert and --key",
            cert.display()
        );
    }
    let identity = Identity::load(&cert, &key)?;
    let config = transport::tls::client_config(&ca, identity, &TransportLimits::default())?;
    Ok((node, config))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `--node`, else the host name, else "device"; at most 64 bytes.
fn node_name(arg: Option<String>) -> Result<NodeName> {
    let name = arg.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "device".to_string())
    });
    NodeName::try_from(name.as_str())
        .map_err(|_| anyhow::anyhow!("node name '{name}' is longer than 64 bytes"))
}

#[cfg(feature = "model")]
fn smoke(args: SmokeArgs) -> Result<()> {
    let device = args.backend.training_device();
    let report = tandem_runtime::model::smoke::fit_linear(&device, args.steps);
    println!(
        "smoke ({}): loss {:.4} -> {:.6} in {} steps, {:.1} ms/step",
        args.backend,
        report.initial_loss,
        report.final_loss,
        report.steps,
        ms(report.elapsed) / report.steps.max(1) as f64,
    );
    if report.final_loss.is_nan() || report.final_loss >= report.initial_loss / 10.0 {
        bail!("training did not converge on backend {}", args.backend);
    }
    Ok(())
}
