//! `cargo xtask reliability crash`: kill -9 at random moments, restart, repeat; then
//! count what the run lost or doubled against a run that was never killed.
//!
//! Scenario built: the `tandem split` device (`--resume` after each kill), against one
//! `tandem-cloud serve` that keeps its tops' snapshots. Both runs use the same seed,
//! data order and settings (small batches, checkpoints every 10 steps), so their losses
//! must agree bit for bit step by step ([`super::history`]), and so must their final
//! held-out accuracies.

use super::history::{self, Verdict};
use crate::split::{self, CloudProcess, DEMO_NODE};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The crash loop's settings.
pub struct Options {
    /// Kills of the device.
    cycles: u32,
    /// Training steps of the run.
    steps: u64,
    /// Seeds the kill times.
    seed: u64,
}

impl Options {
    /// `--cycles N` (default 50), `--steps N` (default 600), `--seed S` (default 1).
    pub fn parse(args: &[String]) -> Result<Self> {
        let number = |name: &str, default: u64| -> Result<u64> {
            util::flag(args, name).map_or(Ok(default), |v| {
                v.parse()
                    .with_context(|| format!("{name} takes a number, got '{v}'"))
            })
        };
        let options = Self {
            cycles: u32::try_from(number("--cycles", 50)?).context("--cycles is too large")?,
            steps: number("--steps", 600)?,
            seed: number("--seed", 1)?,
        };
        if options.steps < 20 {
            bail!("--steps must be at least 20 (two checkpoints)");
        }
        Ok(options)
    }
}

/// Steps between checkpoints: short, so a kill usually loses a few steps of work.
const CHECKPOINT_EVERY: u64 = 10;

/// A kill lands this long after the device starts, uniformly: from before its model
/// is loaded to well into training.
const KILL_AFTER: (Duration, Duration) = (Duration::from_millis(300), Duration::from_secs(12));

pub fn run(options: &Options) -> Result<()> {
    let bin = split::build_and_issue("release")?;
    let dir = util::target_dir().join("reliability").join("split-device");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let state = dir.join("cloud-state");
    let state = state.to_string_lossy();
    let mut cloud = CloudProcess::start(&bin, &["--split-state", &state])?;
    let result = scenario(&bin, &cloud.addr, &dir, options);
    cloud.stop();
    let (verdict, cycles, accuracy) = result?;
    println!(
        "split device: {} kills, {} processes; lost {}, doubled {}, retrained {} (work the kills cost); \
         held-out accuracy {:.2}% killed, {:.2}% never killed",
        cycles,
        verdict.processes,
        verdict.lost,
        verdict.doubled,
        verdict.retrained,
        accuracy.0 * 100.0,
        accuracy.1 * 100.0
    );
    if let Some((step, killed, clean)) = verdict.first_difference {
        println!(
            "first difference: step {step}, loss {killed} killed against {clean} never killed"
        );
    }
    println!(
        "reliability_crash: cycles {cycles} lost {} doubled {}",
        verdict.lost, verdict.doubled
    );
    if verdict.lost + verdict.doubled > 0 || accuracy.0 != accuracy.1 {
        bail!(
            "the crash loop lost or doubled steps (logs in {})",
            dir.display()
        );
    }
    Ok(())
}

/// The uninterrupted run, then the crash loop; the verdict, the kills made and both
/// runs' held-out accuracies (killed, never killed).
fn scenario(
    bin: &Path,
    addr: &str,
    dir: &Path,
    options: &Options,
) -> Result<(Verdict, u32, (f64, f64))> {
    let started = Instant::now();
    eprintln!(
        "reliability crash: the run never killed ({} steps)",
        options.steps
    );
    let clean = Device::new(bin, addr, dir, "clean", options.steps);
    util::run(&mut clean.command(false))?;
    let clean_time = started.elapsed();
    eprintln!("  {:.0} s", clean_time.as_secs_f64());

    let crashed = Device::new(bin, addr, dir, "crashed", options.steps);
    let mut rng = options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut cycles = 0;
    while cycles < options.cycles {
        let mut child = crashed
            .command(true)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start tandem split")?;
        let wait = uniform(&mut rng, KILL_AFTER.0, KILL_AFTER.1);
        let deadline = Instant::now() + wait;
        let mut finished = false;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if finished {
            // The run ended before this kill: every later kill would find nothing.
            eprintln!("  the run finished after {cycles} kills (raise --steps for more)");
            break;
        }
        child.kill().context("cannot kill tandem split")?;
        child.wait()?;
        cycles += 1;
        if cycles % 10 == 0 {
            eprintln!("  {cycles} kills, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    eprintln!("reliability crash: the killed run to its end");
    util::run(&mut crashed.command(true))?;

    let clean_log = history::parse(&read(&clean.step_log)?)?;
    let [clean_process] = clean_log.as_slice() else {
        bail!(
            "the uninterrupted run's step log holds {} processes",
            clean_log.len()
        );
    };
    let killed = history::parse(&read(&crashed.step_log)?)?;
    let verdict = history::check(&killed, clean_process, options.steps);
    let accuracy = (accuracy(&crashed.metrics)?, accuracy(&clean.metrics)?);
    Ok((verdict, cycles, accuracy))
}

/// One device's files and flags.
struct Device {
    bin: PathBuf,
    addr: String,
    steps: u64,
    checkpoint: PathBuf,
    step_log: PathBuf,
    metrics: PathBuf,
    plot: PathBuf,
}

impl Device {
    fn new(bin: &Path, addr: &str, dir: &Path, name: &str, steps: u64) -> Self {
        Self {
            bin: bin.to_owned(),
            addr: addr.to_owned(),
            steps,
            checkpoint: dir.join(format!("{name}.ckpt")),
            step_log: dir.join(format!("{name}.steps")),
            metrics: dir.join(format!("{name}.json")),
            plot: dir.join(format!("{name}.png")),
        }
    }

    /// `tandem split` with the run's settings (`resume`: continue from the checkpoint).
    fn command(&self, resume: bool) -> Command {
        let mut cmd = Command::new(self.bin.join("tandem"));
        cmd.args(["split", "--cloud", &self.addr, "--node", DEMO_NODE])
            .args(["--steps", &self.steps.to_string()])
            .args(["--batch-size", "4", "--max-len", "32", "--seed", "1"])
            .args(["--checkpoint-every", &CHECKPOINT_EVERY.to_string()])
            .args([
                "--eval-every",
                &self.steps.to_string(),
                "--dev-limit",
                "100",
            ])
            .args(["--test-limit", "300"])
            .arg("--checkpoint")
            .arg(&self.checkpoint)
            .arg("--step-log")
            .arg(&self.step_log)
            .arg("--metrics")
            .arg(&self.metrics)
            .arg("--plot")
            .arg(&self.plot);
        if resume {
            cmd.arg("--resume");
        }
        cmd
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The held-out accuracy in a `tandem split` metrics file.
fn accuracy(metrics: &Path) -> Result<f64> {
    let json: serde_json::Value = serde_json::from_str(&read(metrics)?)
        .with_context(|| format!("{} is not JSON", metrics.display()))?;
    json["test"]["accuracy"]
        .as_f64()
        .with_context(|| format!("{} has no test accuracy", metrics.display()))
}

/// A duration uniform in `[low, high)` from a xorshift state.
fn uniform(state: &mut u64, low: Duration, high: Duration) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
    low + (high - low).mul_f64(unit)
}
