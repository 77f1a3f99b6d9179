//! `cargo xtask bench cloud`: the cloud at scale. Measured so far: its resident memory
//! per admitted split device for each `--top` choice (`tandem-cloud measure-tops`, in
//! one process, no network). Aggregate steps/s and latency with many QUIC devices, the
//! shared top and the hostile device are not built yet (BENCHMARKS.md says so).

use crate::split::build_and_issue;
use anyhow::{Context, Result, bail};
use std::process::Command;

/// (top, devices admitted) per measured row: a whole top each costs ~85 MB, so fewer.
const ROWS: &[(&str, u16)] = &[("per-device", 8), ("lora:8", 32)];

pub fn bench(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("bench cloud takes no arguments");
    }
    let bin = build_and_issue("release")?;
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
