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

use super::fl_run::{DEVICES, FlRun, direct};
use crate::split;
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The attacks' device names are `PREFIX-<attack>`.
const PREFIX: &str = "hostile";

/// Every attack of `tandem hostile`, by its `--attacks` name (each needs its certificate;
/// the report marks one without a verdict NOT RUN, so a renamed attack shows).
const ATTACKS: [&str; 16] = [
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
    "join-inflation",
    "oversize-update",
    "replayed-update",
    "silent-participant",
];

/// `--rounds N` (default 60): rounds of each run.
pub fn run(args: &[String]) -> Result<()> {
    let rounds = util::number_flag(args, "--rounds", 60u64)?;
    if rounds < 3 {
        bail!("--rounds must be at least 3");
    }
    let bin = split::build_and_issue("release")?;
    let dir = super::fresh_dir("hostile")?;
    let revoked = issue_certificates(&bin, &dir)?;

    eprintln!("reliability hostile: {DEVICES} honest devices, {rounds} rounds, no attack");
    let calm = FlRun::new(&bin, &dir, "calm", rounds)?.with_identity_updates(false);
    let calm_rss = drive_sampling(&calm, None)?;
    eprintln!("reliability hostile: the same with `tandem hostile` attacking");
    let attacked = FlRun::new(&bin, &dir, "attacked", rounds)?
        .with_identity_updates(true)
        .with_deadline(30);
    let output = dir.join("hostile.out");
    let attack = |addr: &str| -> Result<Child> {
        Command::new(bin.join("tandem"))
            .args(["hostile", "--cloud", addr, "--node", PREFIX])
            .args(["--replay-rounds", "1000000"])
            // Sampled once in about six rounds, it waits out a deadline of 30 s.
            .args(["--participant-wait", "600"])
            .arg("--revoked-cert")
            .arg(&revoked.0)
            .arg("--revoked-key")
            .arg(&revoked.1)
            .stdout(std::fs::File::create(&output)?)
            .stderr(std::fs::File::create(dir.join("hostile.log"))?)
            .spawn()
            .context("cannot start tandem hostile")
    };
    let attacked_rss = drive_sampling(&attacked, Some(&attack))?;
    let report = super::hostile_report::Report::read(
        &std::fs::read_to_string(&output)?,
        &std::fs::read_to_string(attacked.cloud_log())?,
        (&attacked, &calm),
        &ATTACKS,
    )?;
    report.print(calm_rss, attacked_rss);
    if !report.all_refused() {
        bail!("an attack was not refused (see {})", dir.display());
    }
    Ok(())
}

/// Issues each attack's certificate, and a revoked one: the off-allowlist attack's
/// first certificate, copied aside before its name is issued again. Returns the revoked
/// certificate and key.
fn issue_certificates(bin: &Path, dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let issue = |node: &str| {
        util::run(
            Command::new(bin.join("tandem-cloud"))
                .args(["ca", "issue", "--node", node])
                .stdout(Stdio::null()),
        )
    };
    for attack in ATTACKS {
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
