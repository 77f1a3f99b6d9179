//! The split runs the reliability scenarios drive: one device's files and flags, and a
//! cloud around a run. Every run uses the same seed, data order and settings (small
//! batches, checkpoints and top snapshots every [`CHECKPOINT_EVERY`] steps), so runs that
//! lose or double nothing agree loss for loss (see [`super::history`]).

use crate::split::{CloudProcess, DEMO_NODE};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Steps between checkpoints: short, so a kill usually loses a few steps of work.
pub const CHECKPOINT_EVERY: u64 = 10;

/// Runs `body` with a `tandem-cloud serve` keeping its state in `state`, then stops it.
pub fn with_cloud<T>(bin: &Path, state: &Path, body: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let state = state.to_string_lossy();
    let mut cloud = CloudProcess::start(bin, &["--split-state", &state])?;
    let result = body(&cloud.addr);
    cloud.stop();
    result
}

/// One device's files and flags.
pub struct Device {
    bin: PathBuf,
    steps: u64,
    checkpoint: PathBuf,
    /// Its `--step-log`.
    pub step_log: PathBuf,
    /// Its `--metrics`.
    pub metrics: PathBuf,
    plot: PathBuf,
}

impl Device {
    pub fn new(bin: &Path, dir: &Path, name: &str, steps: u64) -> Self {
        Self {
            bin: bin.to_owned(),
            steps,
            checkpoint: dir.join(format!("{name}.ckpt")),
            step_log: dir.join(format!("{name}.steps")),
            metrics: dir.join(format!("{name}.json")),
            plot: dir.join(format!("{name}.png")),
        }
    }

    /// `tandem split` against `addr` with the run's settings (`resume`: continue from
    /// the checkpoint).
    pub fn command(&self, addr: &str, resume: bool) -> Command {
        let mut cmd = Command::new(self.bin.join("tandem"));
        cmd.args(["split", "--cloud", addr, "--node", DEMO_NODE])
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

    /// [`Self::command`] with `--resume`, started in the background, its output
    /// discarded (a process the harness kills, or waits for).
    pub fn spawn_resuming(&self, addr: &str) -> Result<Child> {
        self.command(addr, true)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start tandem split")
    }
}

/// `path`'s text.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The held-out accuracy in a `tandem split` metrics file.
pub fn accuracy(metrics: &Path) -> Result<f64> {
    let json: serde_json::Value = serde_json::from_str(&read(metrics)?)
        .with_context(|| format!("{} is not JSON", metrics.display()))?;
    json["test"]["accuracy"]
        .as_f64()
        .with_context(|| format!("{} has no test accuracy", metrics.display()))
}
