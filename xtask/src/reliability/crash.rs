//! `cargo xtask reliability crash`: kill -9 at random moments, restart, repeat; then
//! count what the run lost or doubled against a run that was never killed.
//!
//! Split scenarios: the `tandem split` device killed (`--resume` after each kill), and
//! `tandem-cloud serve` killed under a running device (restarted on the same address and
//! state). Every run uses the same seed, data order and settings (small batches,
//! checkpoints every 10 steps) as one that is never killed, so their losses must agree
//! bit for bit step by step ([`super::history`]), and so must their final held-out
//! accuracies. The federated scenarios (devices killed across rounds, the cloud killed
//! mid-round) are in [`super::fl_crash`].

use super::history::{self, Verdict};
use super::split_run::{Device, accuracy, read, with_cloud};
use super::{Sides, fl_crash, fresh_dir};
use crate::split::{self, CloudProcess};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::{Duration, Instant};

/// The crash loop's settings.
pub struct Options {
    /// Kills of the split device.
    cycles: u32,
    /// Kills of the cloud under the split device.
    cloud_cycles: u32,
    /// Training steps of the split run.
    steps: u64,
    /// Kills of federated devices.
    fl_cycles: u32,
    /// Kills of the cloud in federated rounds.
    fl_cloud_cycles: u32,
    /// Rounds of the federated runs.
    rounds: u64,
    /// Seeds the kill times.
    seed: u64,
    /// Which scenarios run.
    sides: Sides,
}

impl Options {
    /// `--cycles N` (split device kills, default 50), `--cloud-cycles N` (default 10),
    /// `--steps N` (default 600), `--fl-cycles N` (federated device kills, default 20),
    /// `--fl-cloud-cycles N` (default 10), `--rounds N` (default 30), `--seed S` (default
    /// 1), `--only split|fl`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let count = |name: &str, default: u32| util::number_flag(args, name, default);
        let number = |name: &str, default: u64| util::number_flag(args, name, default);
        let options = Self {
            cycles: count("--cycles", 50)?,
            cloud_cycles: count("--cloud-cycles", 10)?,
            steps: number("--steps", 600)?,
            fl_cycles: count("--fl-cycles", 20)?,
            fl_cloud_cycles: count("--fl-cloud-cycles", 10)?,
            rounds: number("--rounds", 30)?,
            seed: number("--seed", 1)?,
            sides: Sides::parse(args)?,
        };
        if options.steps < 20 {
            bail!("--steps must be at least 20 (two checkpoints)");
        }
        if options.rounds < 3 {
            bail!("--rounds must be at least 3");
        }
        Ok(options)
    }
}

/// A device kill lands this long after the device starts, uniformly: from before its
/// model is loaded to well into training.
const DEVICE_KILL_AFTER: (Duration, Duration) =
    (Duration::from_millis(300), Duration::from_secs(12));

/// A cloud kill lands this long after the cloud (re)starts, uniformly: time for the
/// device to reconnect and train a few steps, or not.
const CLOUD_KILL_AFTER: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(15));

/// The runs never killed, then each scenario against its own; the table's lines and
/// `reliability_crash: cycles N lost L doubled D` (all scenarios summed); an error if
/// anything was lost or doubled.
pub fn run(options: &Options) -> Result<()> {
    let bin = split::build_and_issue("release")?;
    let dir = fresh_dir("crash")?;
    let (mut cycles, mut lost, mut doubled, mut held) = (0, 0, 0, true);
    if options.sides.split {
        let clean = Device::new(&bin, &dir, "clean", options.steps);
        let reference = split_reference(&bin, &dir, options, &clean)?;
        let reference = Reference {
            process: &reference,
            accuracy: accuracy(&clean.metrics)?,
            steps: options.steps,
        };
        let scenarios = [
            device_kills(&bin, &dir, options, &reference)?,
            cloud_kills(&bin, &dir, options, &reference)?,
        ];
        for scenario in &scenarios {
            scenario.print(&reference);
            cycles += scenario.cycles;
            lost += scenario.verdict.lost;
            doubled += scenario.verdict.doubled;
            held &= scenario.accuracy == reference.accuracy;
        }
    }
    if options.sides.fl {
        let reference = fl_crash::reference(&bin, &dir, options.rounds)?;
        let settings = |kills| (options.rounds, kills, options.seed);
        let scenarios = [
            fl_crash::device_kills(&bin, &dir, settings(options.fl_cycles), &reference)?,
            fl_crash::cloud_kills(&bin, &dir, settings(options.fl_cloud_cycles), &reference)?,
        ];
        for scenario in &scenarios {
            scenario.print(&reference);
            cycles += scenario.cycles;
            lost += scenario.verdict.lost;
            doubled += scenario.verdict.doubled;
            held &= scenario.held();
        }
    }
    println!("reliability_crash: cycles {cycles} lost {lost} doubled {doubled}");
    if lost + doubled > 0 || !held {
        bail!("work was lost or doubled (logs in {})", dir.display());
    }
    Ok(())
}

/// The split run never killed: its one process's steps.
fn split_reference(
    bin: &Path,
    dir: &Path,
    options: &Options,
    clean: &Device,
) -> Result<history::Process> {
    let started = Instant::now();
    eprintln!(
        "reliability crash: the split run never killed ({} steps)",
        options.steps
    );
    with_cloud(bin, &dir.join("clean-cloud"), |addr| {
        util::run(&mut clean.command(addr, false))
    })?;
    eprintln!("  {:.0} s", started.elapsed().as_secs_f64());
    let mut log = history::parse(&read(&clean.step_log)?)?;
    if log.len() != 1 {
        bail!(
            "the uninterrupted run's step log holds {} processes",
            log.len()
        );
    }
    Ok(log.remove(0))
}

/// The run that was never killed.
struct Reference<'a> {
    process: &'a history::Process,
    accuracy: f64,
    steps: u64,
}

/// What one scenario did and found.
struct Scenario {
    name: &'static str,
    /// Kills made.
    cycles: u32,
    /// Device processes started after one ended with an error (not a kill).
    device_restarts: u32,
    verdict: Verdict,
    /// The killed run's held-out accuracy.
    accuracy: f64,
}

impl Scenario {
    fn judged(
        name: &'static str,
        (cycles, device_restarts): (u32, u32),
        device: &Device,
        reference: &Reference,
    ) -> Result<Self> {
        let killed = history::parse(&read(&device.step_log)?)?;
        Ok(Self {
            name,
            cycles,
            device_restarts,
            verdict: history::check(&killed, reference.process, reference.steps),
            accuracy: accuracy(&device.metrics)?,
        })
    }

    fn print(&self, reference: &Reference) {
        let v = &self.verdict;
        println!(
            "{}: {} kills, {} device processes ({} restarted after an error); lost {}, doubled {}, \
             retrained {} (work the kills cost); held-out accuracy {:.2}% killed, {:.2}% never killed",
            self.name,
            self.cycles,
            v.processes,
            self.device_restarts,
            v.lost,
            v.doubled,
            v.retrained,
            self.accuracy * 100.0,
            reference.accuracy * 100.0
        );
        if let Some((step, killed, clean)) = v.first_difference {
            println!(
                "  first difference: step {step}, loss {killed} killed against {clean} never killed"
            );
        }
    }
}

/// The split device killed `options.cycles` times at random moments, resumed each time.
fn device_kills(
    bin: &Path,
    dir: &Path,
    options: &Options,
    reference: &Reference,
) -> Result<Scenario> {
    eprintln!(
        "reliability crash: the split device, {} kills",
        options.cycles
    );
    let device = Device::new(bin, dir, "device-killed", options.steps);
    let cycles = with_cloud(bin, &dir.join("device-killed-cloud"), |addr| {
        let mut rng = options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut cycles = 0;
        while cycles < options.cycles {
            let mut child = device.spawn_resuming(addr)?;
            if ended_within(&mut child, uniform(&mut rng, DEVICE_KILL_AFTER))? {
                // The run ended before this kill: every later kill would find nothing.
                eprintln!("  the run finished after {cycles} kills (raise --steps for more)");
                break;
            }
            child.kill().context("cannot kill tandem split")?;
            child.wait()?;
            cycles += 1;
            if cycles % 10 == 0 {
                eprintln!("  {cycles} kills");
            }
        }
        eprintln!("  the killed run to its end");
        util::run(&mut device.command(addr, true))?;
        Ok(cycles)
    })?;
    Scenario::judged("split device killed", (cycles, 0), &device, reference)
}

/// tandem-cloud killed `options.cloud_cycles` times under a running split device and
/// restarted on the same address with the same state; the device reconnects (and is
/// restarted with --resume if it gives up with an error).
fn cloud_kills(
    bin: &Path,
    dir: &Path,
    options: &Options,
    reference: &Reference,
) -> Result<Scenario> {
    eprintln!(
        "reliability crash: tandem-cloud, {} kills",
        options.cloud_cycles
    );
    let device = Device::new(bin, dir, "cloud-killed", options.steps);
    let state = dir.join("cloud-killed-cloud");
    let state = state.to_string_lossy();
    let mut cloud = CloudProcess::start(bin, &["--split-state", &state])?;
    let addr = cloud.addr.clone();
    let spawn = || device.spawn_resuming(&addr);
    let mut child = spawn()?;
    let mut rng = options.seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    let (mut cycles, mut restarts) = (0, 0);
    let mut finished = false;
    while !finished {
        let wait = if cycles < options.cloud_cycles {
            uniform(&mut rng, CLOUD_KILL_AFTER)
        } else {
            Duration::from_secs(3600)
        };
        if ended_within(&mut child, wait)? {
            if child.wait()?.success() {
                finished = true;
            } else {
                restarts += 1;
                if restarts > options.cloud_cycles + 3 {
                    bail!(
                        "the device keeps failing under a restarted cloud (logs in {})",
                        dir.display()
                    );
                }
                child = spawn()?;
            }
            continue;
        }
        cloud.kill()?;
        cycles += 1;
        cloud = CloudProcess::start_at(bin, &addr, &["--split-state", &state])?;
    }
    cloud.stop();
    if cycles < options.cloud_cycles {
        eprintln!("  the run finished after {cycles} cloud kills (raise --steps for more)");
    }
    Scenario::judged(
        "tandem-cloud killed",
        (cycles, restarts),
        &device,
        reference,
    )
}

/// Waits up to `wait` for `child` to end; whether it did.
fn ended_within(child: &mut std::process::Child, wait: Duration) -> Result<bool> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}

/// A duration uniform in `[low, high)` from a xorshift state.
pub(super) fn uniform(state: &mut u64, (low, high): (Duration, Duration)) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
    low + (high - low).mul_f64(unit)
}
