//! `cargo xtask bench fl-adapt [--rounds N]`: heterogeneous devices against a round
//! deadline, with and without adaptation. The population of `bench/fl/devices.json` (four
//! classes: 4x spread in step time, 10x in uplink), 100 Fashion-MNIST clients split
//! Dirichlet(0.3) (so devices that never report take their labels' data with them), 10 a
//! round, one local epoch (19 steps of 32), FedAvg, f32 updates, seed 1, a deadline of
//! 1.5 s a round: the two slower classes cannot do the full work and upload f32 in it.
//! Last line: `fl_adapt: reported adapt X% fixed Y% accuracy adapt A fixed B`.

use crate::fl::{FMNIST_BASE, rounds_only, simulate_with};
use crate::split::build_and_issue;
use crate::util;
use anyhow::{Context, Result};

const DEADLINE_S: &str = "1.5";

pub fn bench(args: &[String]) -> Result<()> {
    let rounds = rounds_only(args, "fl-adapt", 50)?;
    let bin = build_and_issue("release")?;
    let profiles = util::workspace_root().join("bench/fl/devices.json");
    let profiles = profiles.to_string_lossy();
    let common = [
        &FMNIST_BASE[..],
        &[
            "--partition",
            "dirichlet:0.3",
            "--profiles",
            &profiles,
            "--deadline-s",
            DEADLINE_S,
        ],
    ]
    .concat();
    println!(
        "| devices ({rounds} rounds, deadline {DEADLINE_S} s) | sampled devices that reported in time | test accuracy | uplink per round (KB) |\n|---|---|---|---|"
    );
    // (reported in time, test accuracy), both in per cent, of each row.
    let mut rows: Vec<(f64, f64)> = Vec::new();
    for (name, extra) in [
        ("not adapting", &[][..]),
        ("adapting (--adapt)", &["--adapt"][..]),
    ] {
        eprintln!("fl-adapt: {name}");
        let metrics = util::target_dir().join(format!("bench-fl-adapt-{}.json", rows.len()));
        let run = simulate_with(
            &bin,
            "fmnist",
            rounds,
            &[&common[..], extra].concat(),
            &metrics,
        )?;
        let reported = run
            .reported_share
            .context("the metrics have no device plans")?;
        println!(
            "| {name} | {:.1}% | {:.2}% | {:.1} |",
            reported * 100.0,
            run.accuracy * 100.0,
            run.uplink / rounds.max(1) as f64 / 1e3
        );
        rows.push((reported * 100.0, run.accuracy * 100.0));
    }
    let ((fixed_reported, fixed_accuracy), (adapt_reported, adapt_accuracy)) = (rows[0], rows[1]);
    println!(
        "fl_adapt: reported adapt {adapt_reported:.1}% fixed {fixed_reported:.1}% accuracy adapt {adapt_accuracy:.2} fixed {fixed_accuracy:.2}"
    );
    Ok(())
}
