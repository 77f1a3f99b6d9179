//! `cargo xtask bench cloud`: the cloud at scale, for each `--top` choice:
//! - N devices (`tandem load`: real QUIC connections with mTLS, each replaying one real
//!   MiniLM batch as its steps) against one `tandem-cloud serve`: aggregate steps/s,
//!   step latency p50/p99, fairness (the worst device's p99 over the median device's
//!   p50) and the cloud's peak RSS;
//! - the cloud's resident memory per admitted device (`tandem-cloud measure-tops`, in
//!   one process, no network).
//!
//! Not built yet (BENCHMARKS.md says so): the shared top with batching, and a hostile
//! device beside honest ones.

use crate::split::{CloudProcess, build_and_issue};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// (top, devices admitted) per memory row: a whole top each costs ~85 MB, so fewer.
const ROWS: &[(&str, u16)] = &[("per-device", 8), ("lora:8", 32)];

/// The tops and device counts of the load runs, and each device's steps.
const LOAD_TOPS: &[&str] = &["per-device", "lora:8"];
const LOAD_DEVICES: &[(u16, u16)] = &[(1, 8), (8, 4), (32, 2)];

/// The device names `tandem load` uses: `load-0`, `load-1`, ...
const LOAD_PREFIX: &str = "load";

pub fn bench(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("bench cloud takes no arguments");
    }
    let bin = build_and_issue("release")?;
    load_runs(&bin)?;
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
    println!("cloud_lora_rss_per_device_mib: {lora:.2}");
    Ok(())
}

/// Runs every load configuration and prints its table.
fn load_runs(bin: &Path) -> Result<()> {
    let most = LOAD_DEVICES.iter().map(|d| d.0).max().unwrap_or(1);
    issue_load_certificates(bin, most)?;
    let mut rows = Vec::new();
    for &top in LOAD_TOPS {
        for &(devices, steps) in LOAD_DEVICES {
            let state = util::target_dir().join("bench-cloud-tops");
            let _ = std::fs::remove_dir_all(&state);
            let state = state.to_string_lossy().into_owned();
            let mut cloud = CloudProcess::start(bin, &["--top", top, "--split-state", &state])?;
            let out = Command::new(bin.join("tandem"))
                .args(["load", "--cloud", &cloud.addr, "--node", LOAD_PREFIX])
                .args([
                    "--devices",
                    &devices.to_string(),
                    "--steps",
                    &steps.to_string(),
                ])
                .output()
                .context("cannot run tandem load");
            let rss = cloud.peak_rss_mib();
            cloud.stop();
            let out = out?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!(
                    "tandem load --devices {devices} against --top {top} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("load: "))
                .context("tandem load printed no summary")?
                .to_string();
            println!("top {top}, {devices} devices: {line}, cloud peak RSS {rss:.0?} MiB");
            rows.push((top, devices, line, rss));
        }
    }
    println!();
    println!(
        "| --top | devices | steps | aggregate steps/s | p50 ms | p99 ms | fairness (worst p99 / median p50) | cloud peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (top, devices, line, rss) in &rows {
        let field = |name: &str| -> String {
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                if word == name {
                    return words.next().unwrap_or("?").to_string();
                }
            }
            "?".into()
        };
        println!(
            "| {top} | {devices} | {} | {} | {} | {} | {} | {} |",
            field("steps"),
            field("steps_per_s"),
            field("p50_ms"),
            field("p99_ms"),
            field("fairness"),
            rss.map_or("?".into(), |r| format!("{r:.0}")),
        );
    }
    println!();
    Ok(())
}

/// Issues the certificates of devices `load-0` .. `load-{count - 1}` that are missing.
fn issue_load_certificates(bin: &Path, count: u16) -> Result<()> {
    let devices = util::cache_dir().join("pki").join("devices");
    for i in 0..count {
        let node = format!("{LOAD_PREFIX}-{i}");
        if !devices.join(format!("{node}-cert.pem")).exists() {
            util::run(
                Command::new(bin.join("tandem-cloud")).args(["ca", "issue", "--node", &node]),
            )?;
        }
    }
    Ok(())
}
