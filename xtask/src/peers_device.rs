//! The device footprint of `cargo xtask bench peers`: a `tandem fl` device process taking
//! one round (client 0 of 100, 600 images, one local epoch) against the Python process of
//! a Flower + PyTorch client doing the same epoch (`flower_client_epoch.py`): peak RSS
//! (GNU time's maximum resident set, the same measure for both), start-up, the epoch, and
//! what each needs installed.

use crate::fl::issue_device_certificates;
use crate::peers::CORES;
use crate::split::CloudProcess;
use crate::util;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// One side's footprint.
struct Footprint {
    peak_rss_mib: f64,
    /// From start to ready to train (tandem: the process's whole wall time for its round,
    /// connection included).
    start_s: f64,
    /// The local epoch, s (the first in the process on both sides).
    epoch_s: f64,
    /// Bytes installed.
    install_bytes: u64,
}

/// Both sides.
pub struct Devices {
    tandem: Footprint,
    python: Footprint,
}

impl Devices {
    /// tandem's peak RSS over the Python client's.
    pub fn rss_ratio(&self) -> f64 {
        self.tandem.peak_rss_mib / self.python.peak_rss_mib
    }

    pub fn print(&self) {
        println!(
            "\n| device, one round of client 0/100 (600 images, 1 local epoch), cores {CORES} | peak RSS MiB | start-up s | local epoch s (first in the process) | installed MB |\n|---|---|---|---|---|"
        );
        for (name, side, start) in [
            (
                "`tandem fl` (one round against tandem-cloud)",
                &self.tandem,
                "(whole round) ",
            ),
            (
                "Python: flwr ClientApp imports + PyTorch, same epoch",
                &self.python,
                "",
            ),
        ] {
            println!(
                "| {name} | {:.0} | {start}{:.2} | {:.3} | {:.0} |",
                side.peak_rss_mib,
                side.start_s,
                side.epoch_s,
                side.install_bytes as f64 / 1e6
            );
        }
    }
}

/// Measures both devices.
pub fn compare(python: &Path, bin: &Path, dir: &Path) -> Result<Devices> {
    issue_device_certificates(bin, 1)?;
    let state = dir.join("device-cloud");
    let _ = std::fs::remove_dir_all(&state);
    let checkpoint = dir.join("device.ckpt");
    let _ = std::fs::remove_file(&checkpoint);
    let state_arg = state.to_string_lossy();
    let args = [
        "--app",
        "fl",
        "--task",
        "fmnist",
        "--rounds",
        "1",
        "--clients-per-round",
        "1",
        "--codec",
        "identity",
        "--state",
        &state_arg,
    ];
    let mut cloud = CloudProcess::start(bin, &args)?;
    let mut tandem = timed(CORES);
    tandem
        .arg(bin.join("tandem"))
        .args([
            "fl",
            "--cloud",
            &cloud.addr,
            "--node",
            &crate::fl::device_name(0),
        ])
        .args(["--client", "0/100", "--rounds", "1"])
        .arg("--checkpoint")
        .arg(&checkpoint);
    let out = tandem.output().context("cannot run tandem fl");
    cloud.stop();
    let out = out?;
    let err = String::from_utf8_lossy(&out.stderr);
    let (rss, wall) = time_line(&err).context("no figures from GNU time for tandem fl")?;
    let epoch = err
        .lines()
        .find_map(|l| {
            l.split_once(" steps in ")?
                .1
                .split_once(" s")?
                .0
                .parse()
                .ok()
        })
        .context("tandem fl printed no training time")?;
    let tandem = Footprint {
        peak_rss_mib: rss,
        start_s: wall,
        epoch_s: epoch,
        install_bytes: std::fs::metadata(bin.join("tandem"))?.len(),
    };

    let mut peer = timed(CORES);
    peer.arg(python)
        .arg(util::workspace_root().join("bench/peers/flower_client_epoch.py"))
        .args(["--client", "0/100"]);
    let out = peer.output().context("cannot run the Flower client peer")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let figure = |key: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")?.parse().ok())
            .with_context(|| format!("the Flower client peer printed no {key}"))
    };
    let (rss, _) = time_line(&String::from_utf8_lossy(&out.stderr))
        .context("no figures from GNU time for the Flower client")?;
    let venv = python
        .parent()
        .and_then(Path::parent)
        .context("the venv's directory")?;
    let python = Footprint {
        peak_rss_mib: rss,
        start_s: figure("ready_s")?,
        epoch_s: figure("epoch_s")?,
        install_bytes: du_bytes(venv),
    };
    Ok(Devices { tandem, python })
}

/// GNU time around a command pinned to `cores`; its figures end stderr.
fn timed(cores: &str) -> Command {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "peers-time %M %e", "taskset", "-c", cores]);
    cmd
}

/// (peak RSS MiB, wall s) from GNU time's line.
fn time_line(stderr: &str) -> Option<(f64, f64)> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peers-time "))?;
    let (kib, wall) = line.split_once(' ')?;
    Some((kib.parse::<f64>().ok()? / 1024.0, wall.trim().parse().ok()?))
}

/// Bytes under `dir` (`du`), 0 if unknown.
fn du_bytes(dir: &Path) -> u64 {
    util::output(Command::new("du").arg("-sb").arg(dir))
        .and_then(|out| out.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
