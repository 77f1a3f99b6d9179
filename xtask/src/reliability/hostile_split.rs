//! `cargo xtask reliability hostile`'s split half: `tandem hostile --app split` attacks a
//! tandem-cloud training one shared top (`--top shared`, batched) while four honest
//! `tandem load` devices train it, against the same run unattacked: what the cloud did
//! about each attack, its peak RSS, and the honest devices' step times.
//!
//! The attacks start a few seconds into the honest run (once the devices have their
//! batch) and must end before it does; a step runs about a second, so the default
//! 60 steps a device outlast them.

use super::hostile::{Revoked, SPLIT_ATTACKS, TRANSPORT_ATTACKS, attacker};
use super::hostile_report::Findings;
use crate::cloud_bench::{self, LOAD_PREFIX};
use crate::split::CloudProcess;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Honest devices.
const DEVICES: u16 = 4;

/// The cloud's settings: one shared top, batched on two workers (as `bench cloud`).
const CLOUD: [&str; 6] = [
    "--top",
    "shared",
    "--workers",
    "2",
    "--batch-tokens",
    cloud_bench::SHARED_BATCH,
];

/// How long the attacks may go on after the honest devices are done.
const ATTACKS_AFTER: Duration = Duration::from_secs(300);

/// One run's figures.
struct Run {
    /// `tandem load`'s summary line, without its prefix.
    line: String,
    rss_mib: f64,
}

/// The calm and the attacked run: prints the table and `reliability_hostile_split:`;
/// whether every attack was refused.
pub fn run(bin: &Path, dir: &Path, steps: u64, revoked: &Revoked) -> Result<bool> {
    cloud_bench::issue_load_certificates(bin, DEVICES)?;
    eprintln!(
        "reliability hostile: {DEVICES} split devices on a shared top, {steps} steps each, no attack"
    );
    let calm = load_run(bin, dir, "split-calm", steps, None)?;
    eprintln!("reliability hostile: the same with `tandem hostile --app split` attacking");
    let output = dir.join("hostile-split.out");
    let attack = |addr: &str| -> Result<Child> {
        attacker(bin, addr, "split", revoked)
            .stdout(std::fs::File::create(&output)?)
            .stderr(std::fs::File::create(dir.join("hostile-split.log"))?)
            .spawn()
            .context("cannot start tandem hostile")
    };
    let attacked = load_run(bin, dir, "split-attacked", steps, Some(&attack))?;
    let expected: Vec<&str> = TRANSPORT_ATTACKS
        .iter()
        .chain(&SPLIT_ATTACKS)
        .copied()
        .collect();
    let findings = Findings::read(
        &std::fs::read_to_string(&output)?,
        &std::fs::read_to_string(dir.join("split-attacked-cloud.log"))?,
        &expected,
    )?;
    findings.print_table();
    println!(
        "\n| run | honest step p50 ms | p99 ms | steps/s | cloud peak RSS MiB |\n|---|---|---|---|---|"
    );
    let field =
        |run: &Run, name: &str| cloud_bench::load_field(&run.line, name).unwrap_or(f64::NAN);
    for (name, run) in [("no attack", &calm), ("attacked", &attacked)] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.0} |",
            field(run, "p50_ms"),
            field(run, "p99_ms"),
            field(run, "steps_per_s"),
            run.rss_mib
        );
    }
    let (attacks, refused) = findings.counts();
    println!(
        "reliability_hostile_split: attacks {attacks} refused {refused} cloud_peak_rss_mib {:.0} (calm {:.0}) honest_step_p50_change {:+.3}",
        attacked.rss_mib,
        calm.rss_mib,
        field(&attacked, "p50_ms") / field(&calm, "p50_ms") - 1.0
    );
    Ok(findings.all_refused())
}

/// Starts an attacker against the cloud at the address given.
type Attacker<'a> = &'a dyn Fn(&str) -> Result<Child>;

/// `DEVICES` honest devices of `steps` steps against a fresh shared-top cloud (its log
/// in `<dir>/<name>-cloud.log`), with `attack` started once they train; waits for the
/// attacker to finish before the cloud stops.
fn load_run(
    bin: &Path,
    dir: &Path,
    name: &str,
    steps: u64,
    attack: Option<Attacker>,
) -> Result<Run> {
    let state = dir.join(format!("{name}-state"));
    let state = state.to_string_lossy();
    let mut args = CLOUD.to_vec();
    args.extend(["--split-state", &state]);
    let log = std::fs::File::create(dir.join(format!("{name}-cloud.log")))?;
    let mut cloud = CloudProcess::start_logging(bin, "127.0.0.1:0", &args, Stdio::from(log))?;
    let result = drive(bin, &cloud.addr, steps, attack);
    let rss_mib = cloud.peak_rss_mib().unwrap_or(f64::NAN);
    cloud.stop();
    Ok(Run {
        line: result?,
        rss_mib,
    })
}

/// The honest devices' run against `addr`, and the attack beside it; their summary line.
fn drive(bin: &Path, addr: &str, steps: u64, attack: Option<Attacker>) -> Result<String> {
    let load = Command::new(bin.join("tandem"))
        .args(["load", "--cloud", addr, "--node", LOAD_PREFIX])
        .args(["--devices", &DEVICES.to_string()])
        .args(["--steps", &steps.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start tandem load")?;
    // The devices load the model and run their batch through the bottom first.
    std::thread::sleep(Duration::from_secs(5));
    let mut attacker = attack.map(|attack| attack(addr)).transpose()?;
    let out = load.wait_with_output().context("tandem load failed")?;
    if let Some(attacker) = &mut attacker {
        let until = Instant::now() + ATTACKS_AFTER;
        while attacker.try_wait()?.is_none() {
            if Instant::now() > until {
                let _ = attacker.kill();
                eprintln!(
                    "reliability hostile: the attacks did not end {} s after the honest devices",
                    ATTACKS_AFTER.as_secs()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = attacker.wait();
    }
    let (_, line) = cloud_bench::load_summary(&out).context("the honest devices")?;
    Ok(line)
}
