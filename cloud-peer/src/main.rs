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
use tandem_cloud::Server;
use tandem_runtime::transport::TransportLimits;
use tandem_runtime::transport::tls::{DevCertificate, Identity};

/// tandem cloud peer: serves tandem devices over QUIC (split fine-tuning top half,
/// federated aggregation).
#[derive(Parser)]
#[command(
    name = "tandem-cloud",
    version,
    propagate_version = true,
    after_help = "Example:\n  tandem-cloud serve --listen 0.0.0.0:4433"
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
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// UDP address to listen on, e.g. 0.0.0.0:4433 (port 0 picks a free port).
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,
    /// PEM certificate chain. Default: a development certificate for "tandem-cloud",
    /// created on first use in the tandem cache ($TANDEM_CACHE/pki).
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// Name sent to devices in HelloAck.
    #[arg(long, default_value = "tandem-cloud")]
    name: String,
}

fn main() -> ExitCode {
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
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let (identity, cert_path) = match (args.cert, args.key) {
        (Some(cert), Some(key)) => (Identity::load(&cert, &key)?, cert),
        _ => {
            let dev = DevCertificate::default_location();
            let (identity, created) = dev.load_or_create()?;
            if created {
                eprintln!("created development certificate {}", dev.cert.display());
            }
            (identity, dev.cert)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Register the signal handlers before announcing the address, so a script that
        // stops us right after reading the line still gets a graceful close.
        let shutdown = shutdown_signal()?;
        let server = Server::bind(
            args.listen,
            identity,
            &args.name,
            &TransportLimits::default(),
        )?;
        let addr = server
            .local_addr()
            .context("cannot read the bound address")?;
        // Scripts wait for this line (and read the port from it): flush it at once.
        println!(
            "tandem-cloud listening on {addr} (certificate {})",
            cert_path.display()
        );
        std::io::stdout()
            .flush()
            .context("cannot write to stdout")?;
        server.serve(shutdown).await;
        Ok(())
    })
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
