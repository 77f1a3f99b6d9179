//! `tandem hostile`: a hostile client for `cargo xtask reliability hostile`. It runs its
//! attacks on a tandem-cloud one after another, each as its own device (`<node>-<attack>`,
//! certificates issued by the cloud's CA, so the cloud's log names the attack), and
//! prints what the cloud did about each: the stream stopped, the connection closed with
//! its code and reason, the cost bounded, or NOT REFUSED. Against a federated cloud
//! (`--app fl`), `replayed-update` takes part in rounds meanwhile (identity codecs only),
//! replaying and spoofing updates; against a split cloud's shared top (`--app split`)
//! the split attacks resend steps to a stalled reader and send steps that overflow.
//!
//! Point it only at a cloud you run.

mod attacks;
mod probe;
mod replay;
mod split;

use crate::ConnectArgs;
use anyhow::{Context, Result};
use attacks::Verdict;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use tandem_runtime::transport::pki::Pki;

/// The attacks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Attack {
    /// Garbage bytes on a session stream.
    GarbageFrame,
    /// A frame cut short, its stream finished.
    TruncatedFrame,
    /// A Hello header claiming u32::MAX bytes.
    MaxLengthHello,
    /// A session stream's header claiming u32::MAX bytes.
    MaxLengthStream,
    /// A Hello of another schema hash.
    SchemaMismatch,
    /// A Hello of a protocol version the cloud does not speak.
    VersionMismatch,
    /// Kinds that travel cloud to device, sent to the cloud.
    WrongDirection,
    /// --streams streams of garbage, as fast as granted.
    StreamFlood,
    /// Streams never finished, a byte a second, for --hold.
    Slowloris,
    /// --connections connections of one device, each admitted, held for --hold.
    ConnectionFlood,
    /// --connections connections that never send a Hello.
    SilentConnections,
    /// A revoked certificate of the cloud's CA (--revoked-cert, --revoked-key).
    OffAllowlist,
    /// A Join of 600 examples, then one of 2^24 (the device's FedAvg weight).
    JoinInflation,
    /// An Update announcing 100 MiB, its tensor never sent.
    OversizeUpdate,
    /// Rounds with replayed, stale and spoofed updates beside a valid one.
    ReplayedUpdate,
    /// A participant that joins, takes its tasks and never reports (for up to
    /// --participant-wait, beside the other attacks).
    SilentParticipant,
    /// A split step resent as fast as the cloud reads, by a device that takes none of
    /// the cloud's replies.
    ResendAmplification,
    /// A split step whose finite cut values overflow the shared top, then an ordinary
    /// one.
    SharedTopOverflow,
}

impl Attack {
    /// Whether it attacks what a cloud serving `app` serves (the others attack the
    /// transport, and any cloud).
    fn attacks(self, app: App) -> bool {
        match self {
            Self::JoinInflation
            | Self::OversizeUpdate
            | Self::ReplayedUpdate
            | Self::SilentParticipant => app == App::Fl,
            Self::ResendAmplification | Self::SharedTopOverflow => app == App::Split,
            _ => true,
        }
    }
}

/// What the cloud under attack serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum App {
    /// Federated rounds (`serve --app fl`).
    Fl,
    /// Split steps on a shared top (`serve --top shared`).
    Split,
}

/// The attacks that run beside the others, as participants in rounds.
const PARTICIPANTS: [Attack; 2] = [Attack::ReplayedUpdate, Attack::SilentParticipant];

#[derive(Args)]
pub(crate) struct HostileArgs {
    /// The cloud; --node is the prefix of the attacks' device names [default: hostile].
    #[command(flatten)]
    connect: ConnectArgs,
    /// What the cloud serves: the default attacks are those on its kind of session and
    /// on the transport.
    #[arg(long, value_enum, default_value = "fl")]
    app: App,
    /// Attacks to run, comma-separated [default: every attack on --app's cloud].
    #[arg(long, value_enum, value_delimiter = ',')]
    attacks: Vec<Attack>,
    /// The model name the cloud's task admits in a federated Hello.
    #[arg(long, default_value = "fmnist")]
    model: String,
    /// The cut (layers on the device) the split attacks ask of the shared top: the
    /// honest devices'.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=5))]
    cut: u8,
    /// Streams of the stream flood.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    streams: u32,
    /// Connections of the connection floods.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Seconds slowloris streams and flooding connections are held.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    hold: u64,
    /// Rounds replayed-update takes part in.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    replay_rounds: u64,
    /// Seconds silent-participant waits for a round it was sampled for to commit.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    participant_wait: u64,
    /// A certificate of the cloud's CA that is no longer on its allowlist.
    #[arg(long, value_name = "PEM", requires = "revoked_key")]
    revoked_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, value_name = "PEM", requires = "revoked_cert")]
    revoked_key: Option<PathBuf>,
}

pub(crate) fn run(args: HostileArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(attack(args))
}

async fn attack(args: HostileArgs) -> Result<()> {
    let pki = Pki::default_location();
    let target = probe::Target {
        peer: crate::resolve(&args.connect.cloud).await?,
        server_name: args.connect.server_name.clone(),
        ca: args.connect.ca.clone().unwrap_or_else(|| pki.ca_cert()),
        prefix: args
            .connect
            .node
            .clone()
            .unwrap_or_else(|| "hostile".into()),
        pki,
        model: args.model.clone(),
        cut: args.cut,
    };
    let chosen: Vec<Attack> = if args.attacks.is_empty() {
        Attack::value_variants()
            .iter()
            .copied()
            .filter(|a| a.attacks(args.app))
            .collect()
    } else {
        args.attacks.clone()
    };
    let participant = chosen.contains(&Attack::ReplayedUpdate).then(|| {
        let target = target.clone();
        let rounds = args.replay_rounds;
        tokio::spawn(async move { replay::participate(&target, rounds).await })
    });
    let silent = chosen.contains(&Attack::SilentParticipant).then(|| {
        let target = target.clone();
        let wait = Duration::from_secs(args.participant_wait);
        tokio::spawn(async move { attacks::silent_participant(&target, wait).await })
    });
    let mut tally = [0u32; 4];
    for &attack in chosen.iter().filter(|a| !PARTICIPANTS.contains(a)) {
        let name = name(attack);
        let verdict = match run_one(attack, &target, &args).await {
            Ok(Some(verdict)) => verdict,
            Ok(None) => {
                println!("attack {name}: skipped (no --revoked-cert)");
                continue;
            }
            Err(err) => Verdict::NotRefused(format!("the attack failed: {err:#}")),
        };
        report(&mut tally, &name, verdict);
    }
    if let Some(silent) = silent {
        let verdict = match silent.await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(err)) => Verdict::NotRefused(format!("the attack failed: {err:#}")),
            Err(err) => Verdict::NotRefused(format!("the attack failed: {err}")),
        };
        report(&mut tally, &name(Attack::SilentParticipant), verdict);
    }
    let [refused, contained, logged, not_refused] = tally;
    println!(
        "hostile: attacks {} refused {refused} contained {contained} cloud-log {logged} not-refused {not_refused}",
        tally.iter().sum::<u32>()
    );
    if let Some(participant) = participant {
        participant.await.context("replayed-update failed")??;
    }
    Ok(())
}

/// Prints `verdict` of attack `name` and counts it.
fn report(tally: &mut [u32; 4], name: &str, verdict: Verdict) {
    let (index, said, detail) = match verdict {
        Verdict::Refused(d) => (0, "refused", d),
        Verdict::Contained(d) => (1, "contained", d),
        Verdict::InCloudLog(d) => (2, "see the cloud's log", d),
        Verdict::NotRefused(d) => (3, "NOT REFUSED", d),
    };
    tally[index] += 1;
    println!("attack {name}: {said}: {detail}");
}

/// Runs `attack`; `None` when it cannot run with these arguments.
async fn run_one(
    attack: Attack,
    target: &probe::Target,
    args: &HostileArgs,
) -> Result<Option<Verdict>> {
    let hold = Duration::from_secs(args.hold);
    Ok(Some(match attack {
        Attack::GarbageFrame => attacks::garbage_frame(target).await?,
        Attack::TruncatedFrame => attacks::truncated_frame(target).await?,
        Attack::MaxLengthHello => attacks::max_length_hello(target).await?,
        Attack::MaxLengthStream => attacks::max_length_stream(target).await?,
        Attack::SchemaMismatch => attacks::schema_mismatch(target).await?,
        Attack::VersionMismatch => attacks::version_mismatch(target).await?,
        Attack::WrongDirection => attacks::wrong_direction(target).await?,
        Attack::StreamFlood => attacks::stream_flood(target, args.streams).await?,
        Attack::Slowloris => attacks::slowloris(target, hold).await?,
        Attack::ConnectionFlood => {
            attacks::connection_flood(target, args.connections, hold).await?
        }
        Attack::SilentConnections => attacks::silent_connections(target, args.connections).await?,
        Attack::OffAllowlist => match (&args.revoked_cert, &args.revoked_key) {
            (Some(cert), Some(key)) => attacks::off_allowlist(target, cert, key).await?,
            _ => return Ok(None),
        },
        Attack::JoinInflation => attacks::join_inflation(target).await?,
        Attack::OversizeUpdate => attacks::oversize_update(target).await?,
        Attack::ResendAmplification => split::resend_amplification(target).await?,
        Attack::SharedTopOverflow => split::shared_top_overflow(target).await?,
        Attack::ReplayedUpdate | Attack::SilentParticipant => return Ok(None),
    }))
}

/// An attack's name on the command line.
pub(crate) fn name(attack: Attack) -> String {
    attack
        .to_possible_value()
        .map_or_else(|| format!("{attack:?}"), |v| v.get_name().to_string())
}
