//! `cargo xtask bench fl-adapt [--rounds N]`: heterogeneous devices against a round
//! deadline, with and without adaptation. The population of `bench/fl/devices.json` (four
//! classes: 4x spread in step time, 10x in uplink), 100 Fashion-MNIST clients split
//! Dirichlet(0.3) (so devices that never report take their labels' data with them), 10 a
//! round, one local epoch (19 steps of 32), FedAvg, f32 updates, seed 1, a deadline of
//! 1.5 s a round: the two slower classes cannot do the full work and upload f32 in it.
//! Last line: `fl_adapt: reported adapt X% fixed Y% accuracy adapt A fixed B`.

use crate::fl::{Run, simulate_with};
use crate::split::build_and_issue;
use crate::util;
use anyhow::{Context, Result, bail};

const DEADLINE_S: &str = "1.5";

pub fn bench(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a.starts_with("--") && a != "--rounds") {
        bail!("usage: cargo xtask bench fl-adapt [--rounds N]");
    }
    let rounds: u64 = util::number_flag(args, "--rounds", 50)?;
    let bin = build_and_issue("release")?;
    let profiles = util::workspace_root().join("bench/fl/devices.json");
    let profiles = profiles.to_string_lossy();
    let common = [
        "--clients",
        "100",
        "--clients-per-round",
        "10",
        "--partition",
        "dirichlet:0.3",
        "--lr",
        "0.05",
        "--batch",
        "32",
        "--profiles",
        &profiles,
        "--deadline-s",
        DEADLINE_S,
    ];
    println!(
        "| devices ({rounds} rounds, deadline {DEADLINE_S} s) | sampled devices that reported in time | test accuracy | uplink per round (KB) |\n|---|---|---|---|"
    );
    let mut runs: Vec<Run> = Vec::new();
    for (name, extra) in [
        ("not adapting", &[][..]),
        ("adapting (--adapt)", &["--adapt"][..]),
    ] {
        eprintln!("fl-adapt: {name}");
        let args: Vec<String> = common.iter().chain(extra).map(|a| a.to_string()).collect();
        let metrics = util::target_dir().join(format!("bench-fl-adapt-{}.json", runs.len()));
        let run = simulate_with(&bin, "fmnist", rounds, &args, &metrics)?;
        let reported = run
            .reported_share
            .context("the metrics have no device plans")?;
        println!(
            "| {name} | {:.1}% | {:.2}% | {:.1} |",
            reported * 100.0,
            run.accuracy * 100.0,
            run.uplink / rounds.max(1) as f64 / 1e3
        );
        runs.push(run);
    }
    let share = |r: &Run| r.reported_share.unwrap_or(0.0) * 100.0;
    println!(
        "fl_adapt: reported adapt {:.1}% fixed {:.1}% accuracy adapt {:.2} fixed {:.2}",
        share(&runs[1]),
        share(&runs[0]),
        runs[1].accuracy * 100.0,
        runs[0].accuracy * 100.0
    );
    Ok(())
}
