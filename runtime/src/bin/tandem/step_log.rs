//! `tandem split --step-log FILE`: one line per trained step, appended as each step's
//! gradient comes back, so a process killed at any moment leaves the steps it trained
//! behind it. `cargo xtask reliability crash` rebuilds a crash-looped run's history from
//! it: which process trained which step, from where each restart resumed, and each
//! step's loss (to compare with a run that was never killed).
//!
//! Format (text, space-separated): `start STEP pid PID` when a process begins training
//! at STEP (or goes back to its checkpoint at STEP); `step STEP LOSS LOSS_BITS` after each step (LOSS_BITS: the f32's bits in hex,
//! so a comparison can be exact).

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An open step log.
pub(crate) struct StepLog {
    file: File,
    path: PathBuf,
}

impl StepLog {
    /// Opens `path` for appending and notes that this process starts at `start_step`.
    pub(crate) fn open(path: &Path, start_step: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the step log {}", path.display()))?;
        let mut log = Self {
            file,
            path: path.to_owned(),
        };
        log.restart(start_step)?;
        Ok(log)
    }

    /// Notes that this process (re)starts training at `step`: at its start, or after
    /// it went back to its checkpoint there.
    pub(crate) fn restart(&mut self, step: u64) -> Result<()> {
        self.line(&format!("start {step} pid {}", std::process::id()))
    }

    /// Notes that `step` trained with `loss`.
    pub(crate) fn step(&mut self, step: u64, loss: f32) -> Result<()> {
        self.line(&format!("step {step} {loss} {:08x}", loss.to_bits()))
    }

    /// One line in one write (appends of whole lines never interleave).
    fn line(&mut self, line: &str) -> Result<()> {
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("cannot write the step log {}", self.path.display()))
    }
}
