//! `cargo xtask reliability hostile`: `tandem hostile` attacks a federated tandem-cloud
//! while four honest `tandem fl` devices train on it, against the same run unattacked:
//! what the cloud did about each attack, its peak RSS, and the honest devices' rounds.
//!
//! The attacked run has room for one more device per round, which `tandem hostile`'s
//! replaying participant or its silent one takes (updates are identity-coded so the
//! replayer can forge valid ones; the silent one never reports, so a round it is sampled
//! for commits at its 30 s deadline with the others, and it sits out the next rounds);
//! every other attack comes from a device of its own that never joins rounds. Attacks
//! the attacker cannot see refused (a truncated frame, replayed updates) are read from
//! the cloud's log, which names the attack's device.
//!
//! Then the same against a cloud training one shared split top
//! ([`super::hostile_split`]): the transport attacks and the split ones.

use super::fl_run::{DEVICES, FlRun, direct};
use crate::split;
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The attacks' device names are `PREFIX-<attack>`.
const PREFIX: &str = "hostile";

/// The attacks of `tandem hostile` on the transport, by their `--attacks` names, which
/// both clouds face (each needs its certificate; the report marks one without a verdict
/// NOT RUN, so a renamed attack shows).
pub const TRANSPORT_ATTACKS: [&str; 12] = [
    "garbage-frame",
    "truncated-frame",
    "max-length-hello",
    "max-length-stream",
    "schema-mismatch",
    "version-mismatch",
    "wrong-direction",
    "stream-flood",
    "slowloris",
    "connection-flood",
    "silent-connections",
    "off-allowlist",
];

/// The attacks on federated rounds (`tandem hostile --app fl`).
const FL_ATTACKS: [&str; 4] = [
    "join-inflation",
    "oversize-update",
    "replayed-update",
    "silent-participant",
];

/// The attacks on a shared split top (`tandem hostile --app split`).
pub const SPLIT_ATTACKS: [&str; 2] = ["resend-amplification", "shared-top-overflow"];

/// `--rounds N` (default 60): rounds of each federated run; `--steps N` (default 60):
/// steps of each honest split device; `--only fl|split`.
pub fn run(args: &[String]) -> Result<()> {
    let rounds = util::number_flag(args, "--rounds", 60u64)?;
    if rounds < 3 {
        bail!("--rounds must be at least 3");
    }
    let steps = util::number_flag(args, "--steps", 60u64)?;
    if steps < 10 {
        bail!("--steps must be at least 10");
    }
    let sides = super::Sides::parse(args)?;
    let bin = split::build_and_issue("release")?;
    let dir = super::fresh_dir("hostile")?;
    let revoked = issue_certificates(&bin, &dir)?;
    let mut held = true;
    if sides.fl {
        held &= fl_run(&bin, &dir, rounds, &revoked)?;
    }
    if sides.split {
        held &= super::hostile_split::run(&bin, &dir, steps, &revoked)?;
    }
    if !held {
        bail!("an attack was not refused (see {})", dir.display());
    }
    Ok(())
}

/// The attacker's certificate and key that left the allowlist.
pub type Revoked = (PathBuf, PathBuf);

/// The federated run, calm and attacked: prints the table and `reliability_hostile:`;
/// whether every attack was refused.
fn fl_run(bin: &Path, dir: &Path, rounds: u64, revoked: &Revoked) -> Result<bool> {
    eprintln!("reliability hostile: {DEVICES} honest devices, {rounds} rounds, no attack");
    let calm = FlRun::new(bin, dir, "calm", rounds)?.with_identity_updates(false);
    let calm_rss = drive_sampling(&calm, None)?;
    eprintln!("reliability hostile: the same with `tandem hostile` attacking");
    let attacked = FlRun::new(bin, dir, "attacked", rounds)?
        .with_identity_updates(true)
        .with_deadline(30);
    let output = dir.join("hostile.out");
    let attack = |addr: &str| -> Result<Child> {
        attacker(bin, addr, "fl", revoked)
            .args(["--replay-rounds", "1000000"])
            // Sampled once in about six rounds, it waits out a deadline of 30 s.
            .args(["--participant-wait", "600"])
            .stdout(std::fs::File::create(&output)?)
            .stderr(std::fs::File::create(dir.join("hostile.log"))?)
            .spawn()
            .context("cannot start tandem hostile")
    };
    let attacked_rss = drive_sampling(&attacked, Some(&attack))?;
    let expected: Vec<&str> = TRANSPORT_ATTACKS
        .iter()
        .chain(&FL_ATTACKS)
        .copied()
        .collect();
    let report = super::hostile_report::Report::read(
        &std::fs::read_to_string(&output)?,
        &std::fs::read_to_string(attacked.cloud_log())?,
        (&attacked, &calm),
        &expected,
    )?;
    report.print(calm_rss, attacked_rss);
    Ok(report.all_refused())
}

/// `tandem hostile --app app` against `addr`, with the revoked certificate, its output
/// still to direct.
pub fn attacker(bin: &Path, addr: &str, app: &str, revoked: &Revoked) -> Command {
    let mut cmd = Command::new(bin.join("tandem"));
    cmd.args(["hostile", "--cloud", addr, "--node", PREFIX, "--app", app])
        .arg("--revoked-cert")
        .arg(&revoked.0)
        .arg("--revoked-key")
        .arg(&revoked.1);
    cmd
}

/// Issues each attack's certificate, and a revoked one: the off-allowlist attack's
/// first certificate, copied aside before its name is issued again. Returns the revoked
/// certificate and key.
fn issue_certificates(bin: &Path, dir: &Path) -> Result<Revoked> {
    let issue = |node: &str| {
        util::run(
            Command::new(bin.join("tandem-cloud"))
                .args(["ca", "issue", "--node", node])
                .stdout(Stdio::null()),
        )
    };
    for attack in TRANSPORT_ATTACKS
        .iter()
        .chain(&FL_ATTACKS)
        .chain(&SPLIT_ATTACKS)
    {
        issue(&format!("{PREFIX}-{attack}"))?;
    }
    let devices = util::cache_dir().join("pki/devices");
    let node = format!("{PREFIX}-off-allowlist");
    let revoked = (dir.join("revoked-cert.pem"), dir.join("revoked-key.pem"));
    std::fs::copy(devices.join(format!("{node}-cert.pem")), &revoked.0)?;
    std::fs::copy(devices.join(format!("{node}-key.pem")), &revoked.1)?;
    // Issued again: the copy's fingerprint leaves the allowlist.
    issue(&node)?;
    Ok(revoked)
}

/// Starts an attacker against the cloud at the address given.
type Attacker<'a> = &'a dyn Fn(&str) -> Result<Child>;

/// Runs `run` to its end, starting `attack` against the cloud a second in, and returns
/// the cloud's peak RSS (MiB), sampled every second.
fn drive_sampling(run: &FlRun, attack: Option<Attacker>) -> Result<f64> {
    let cloud = run.start_cloud(None)?;
    let targets = direct(&cloud);
    let mut peak: f64 = 0.0;
    let mut attacker: Option<Child> = None;
    let result = run.drive(
        cloud,
        &targets,
        |cloud, _| {
            peak = peak.max(cloud.peak_rss_mib().unwrap_or(0.0));
            if attacker.is_none()
                && let Some(attack) = attack
            {
                attacker = Some(attack(&cloud.addr)?);
            }
            Ok(Some(Duration::from_secs(1)))
        },
        Some(Duration::from_secs(1)),
    );
    if let Some(mut attacker) = attacker {
        let _ = attacker.kill();
        let _ = attacker.wait();
    }
    result?;
    Ok(peak)
}
