//! `cargo xtask bench cloud`: the cloud at scale, for each `--top` choice:
//! - N devices (`tandem load`: real QUIC connections with mTLS, each replaying one real
//!   MiniLM batch as its steps) against one `tandem-cloud serve`: aggregate steps/s,
//!   step latency p50/p99, fairness (the worst device's p99 over the median device's
//!   p50) and the cloud's peak RSS;
//! - the cloud's resident memory per admitted device (`tandem-cloud measure-tops`, in
//!   one process, no network).
//!
//! - one hostile device (`tandem load --hostile`) beside 8 honest ones: the change of
//!   their p50 and the cloud's peak RSS;
//! - the shared top's batching: aggregate steps/s at 32 devices over 1.

use crate::split::{CloudProcess, build_and_issue};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// (top, devices admitted) per memory row: a whole top each costs ~85 MB, so fewer.
const ROWS: &[(&str, u16)] = &[("per-device", 8), ("lora:8", 32), ("shared", 32)];

/// The tops (and the cloud's worker threads) and device counts of the load runs, and
/// each device's steps. The second LoRA row shows the pool using both cores: burn's CPU
/// backend runs each step on one thread.
const LOAD_TOPS: &[(&str, u16)] = &[
    ("per-device", 1),
    ("lora:8", 1),
    ("lora:8", 2),
    ("shared", 1),
];
const LOAD_DEVICES: &[(u16, u16)] = &[(1, 8), (8, 4), (32, 2), (128, 2)];

/// A whole top each at 128 devices would hold ~11 GB: that row is left out.
const PER_DEVICE_MOST: u16 = 32;

/// The batching figure: the shared top's aggregate steps/s at this many devices over 1.
const SHARED_TOP: &str = "shared";
const SHARED_MANY: u16 = 32;

/// The shared rows' batch budget in padded tokens (the GPU default): 64 of these steps.
pub(crate) const SHARED_BATCH: &str = "65536";

/// The device names `tandem load` uses: `load-0`, `load-1`, ..., `load-hostile-0`.
pub(crate) const LOAD_PREFIX: &str = "load";

/// The hostile run: one hostile device beside this many honest ones, on this top.
const HOSTILE_BESIDE: u16 = 8;
const HOSTILE_TOP: &str = "lora:8";

pub fn bench(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("bench cloud takes no arguments");
    }
    let bin = build_and_issue("release")?;
    let (hostile_change, shared_speedup) = load_runs(&bin)?;
    let mut per_device = Vec::new();
    for &(top, devices) in ROWS {
        let out = Command::new(bin.join("tandem-cloud"))
            .args([
                "measure-tops",
                "--top",
                top,
                "--devices",
                &devices.to_string(),
            ])
            .output()
            .context("cannot run tandem-cloud measure-tops")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "tandem-cloud measure-tops --top {top} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let lines: Vec<&str> = text.lines().collect();
        let figure: f64 = lines
            .iter()
            .find_map(|l| l.strip_prefix("tops_rss_per_device_mib: "))
            .and_then(|v| v.trim().parse().ok())
            .context("measure-tops printed no figure")?;
        let first = lines.iter().find(|l| l.starts_with("devices    1:"));
        let last = lines.iter().rev().find(|l| l.starts_with("devices"));
        println!(
            "top {top}: {} / {} / {figure:.2} MiB per added device",
            first.unwrap_or(&"?").trim(),
            last.unwrap_or(&"?").trim()
        );
        per_device.push((top, devices, figure));
    }
    println!();
    println!("| --top | devices | cloud RSS per added device (MiB) |");
    println!("|---|---|---|");
    for (top, devices, figure) in &per_device {
        println!("| {top} | {devices} | {figure:.2} |");
    }
    let lora = per_device
        .iter()
        .find(|r| r.0.starts_with("lora"))
        .map_or(f64::NAN, |r| r.2);
    println!(
        "cloud_lora_rss_per_device_mib: {lora:.2} shared_n32_speedup: {shared_speedup:.2} hostile_honest_p50_change: {hostile_change:+.3}"
    );
    Ok(())
}

/// One load run's summary line (`tandem load`'s `load: ...` without its prefix), what
/// its hostile devices reported, and the cloud's peak RSS.
struct LoadRun {
    line: String,
    hostile: Vec<String>,
    rss_mib: Option<f64>,
}

impl LoadRun {
    /// The number after `name` in the summary line.
    fn field(&self, name: &str) -> Option<f64> {
        load_field(&self.line, name)
    }
}

/// `tandem load`'s output and its summary line (without its `load: ` prefix), or what
/// went wrong.
pub(crate) fn load_summary(out: &std::process::Output) -> Result<(String, String)> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("load: "))
        .context("tandem load printed no summary")?
        .to_string();
    Ok((text, line))
}

/// The number after `name` in `tandem load`'s summary `line`.
pub(crate) fn load_field(line: &str, name: &str) -> Option<f64> {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == name {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// `devices` honest devices of `steps` steps each, and `hostile` hostile ones, against
/// a fresh cloud training `--top top`.
fn load_run(
    bin: &Path,
    (top, workers): (&str, u16),
    devices: u16,
    steps: u16,
    hostile: u16,
) -> Result<LoadRun> {
    let state = util::target_dir().join("bench-cloud-tops");
    let _ = std::fs::remove_dir_all(&state);
    let state = state.to_string_lossy().into_owned();
    let workers = workers.to_string();
    // Batching is off by default on the CPU; the shared rows measure it.
    let batch = if top == SHARED_TOP { SHARED_BATCH } else { "0" };
    let mut cloud = CloudProcess::start(
        bin,
        &[
            "--top",
            top,
            "--workers",
            &workers,
            "--batch-tokens",
            batch,
            "--split-state",
            &state,
        ],
    )?;
    let out = Command::new(bin.join("tandem"))
        .args(["load", "--cloud", &cloud.addr, "--node", LOAD_PREFIX])
        .args([
            "--devices",
            &devices.to_string(),
            "--steps",
            &steps.to_string(),
        ])
        .args(["--hostile", &hostile.to_string()])
        .output()
        .context("cannot run tandem load");
    let rss_mib = cloud.peak_rss_mib();
    cloud.stop();
    let out = out?;
    let (text, line) = load_summary(&out).with_context(|| {
        format!("tandem load --devices {devices} --hostile {hostile} against --top {top}")
    })?;
    let hostile = text
        .lines()
        .filter_map(|l| l.strip_prefix("hostile: "))
        .map(str::to_string)
        .collect();
    let shown = rss_mib.map_or("?".into(), |r| format!("{r:.0}"));
    println!(
        "top {top}, {workers} workers, {devices} devices, {hostile:?} hostile: {line}, cloud peak RSS {shown} MiB"
    );
    Ok(LoadRun {
        line,
        hostile,
        rss_mib,
    })
}

/// Runs every load configuration and prints its table; returns the change of the
/// honest devices' p50 with a hostile device beside 8 of them (`lora:8`), and the shared
/// top's aggregate steps/s at 32 devices over 1.
fn load_runs(bin: &Path) -> Result<(f64, f64)> {
    let most = LOAD_DEVICES.iter().map(|d| d.0).max().unwrap_or(1);
    issue_load_certificates(bin, most)?;
    let mut rows = Vec::new();
    for &top in LOAD_TOPS {
        for &(devices, steps) in LOAD_DEVICES {
            if top.0 == "per-device" && devices > PER_DEVICE_MOST {
                continue;
            }
            rows.push((top, devices, load_run(bin, top, devices, steps, 0)?));
        }
    }
    let shared_rate = |n: u16| {
        rows.iter()
            .find(|(top, devices, _)| *top == (SHARED_TOP, 1) && *devices == n)
            .and_then(|r| r.2.field("steps_per_s"))
            .unwrap_or(f64::NAN)
    };
    let shared_speedup = shared_rate(SHARED_MANY) / shared_rate(1);
    let alone = rows
        .iter()
        .find(|(top, devices, _)| *top == (HOSTILE_TOP, 1) && *devices == HOSTILE_BESIDE)
        .and_then(|r| r.2.field("p50_ms"))
        .context("no run of the honest devices alone")?;
    let steps = LOAD_DEVICES
        .iter()
        .find(|d| d.0 == HOSTILE_BESIDE)
        .map_or(4, |d| d.1);
    let attacked = load_run(bin, (HOSTILE_TOP, 1), HOSTILE_BESIDE, steps, 1)?;
    let change = attacked.field("p50_ms").unwrap_or(f64::NAN) / alone - 1.0;
    println!();
    println!(
        "| --top | workers | devices | steps | aggregate steps/s | p50 ms | p99 ms | fairness (worst p99 / median p50) | cloud peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let shown = |v: Option<f64>, digits: usize| v.map_or("?".into(), |v| format!("{v:.digits$}"));
    let attacked_row = ((HOSTILE_TOP, 1), HOSTILE_BESIDE, attacked);
    for ((top, workers), devices, run) in rows.iter().chain(std::iter::once(&attacked_row)) {
        let label = if run.hostile.is_empty() {
            format!("{devices}")
        } else {
            format!("{devices} + 1 hostile ({})", run.hostile.join("; "))
        };
        println!(
            "| {top} | {workers} | {label} | {} | {} | {} | {} | {} | {} |",
            shown(run.field("steps"), 0),
            shown(run.field("steps_per_s"), 3),
            shown(run.field("p50_ms"), 1),
            shown(run.field("p99_ms"), 1),
            shown(run.field("fairness"), 2),
            shown(run.rss_mib, 0),
        );
    }
    println!();
    println!(
        "honest p50 beside a hostile device: {:+.1}%",
        change * 100.0
    );
    println!("shared top, aggregate steps/s at {SHARED_MANY} devices over 1: {shared_speedup:.2}x");
    Ok((change, shared_speedup))
}

/// Issues the certificates of devices `load-0` .. `load-{count - 1}` and `load-hostile-0`
/// that are missing.
pub(crate) fn issue_load_certificates(bin: &Path, count: u16) -> Result<()> {
    let devices = util::cache_dir().join("pki").join("devices");
    let honest = (0..count).map(|i| format!("{LOAD_PREFIX}-{i}"));
    for node in honest.chain(std::iter::once(format!("{LOAD_PREFIX}-hostile-0"))) {
        if !devices.join(format!("{node}-cert.pem")).exists() {
            util::run(
                Command::new(bin.join("tandem-cloud")).args(["ca", "issue", "--node", &node]),
            )?;
        }
    }
    Ok(())
}
