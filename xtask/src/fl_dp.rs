//! `cargo xtask bench fl-dp [--rounds N]`: accuracy against privacy for central DP
//! (DP-FedAvg) on Fashion-MNIST. 1,000 IID clients of 60 images, 100 sampled a round
//! (q = 0.1), FedAvg, one local epoch of SGD (lr 0.1, momentum 0.9, batch 8: 8 steps on a
//! client's 60 images), seed 1.
//! Rows: no DP; clipping alone (the unweighted clipped mean without noise is not a
//! mode of its own: FedAvg with `--clip`); and epsilon 8, 4 and 1 at delta 1e-5, the
//! noise multiplier calibrated by `tandem-cloud simulate --dp-epsilon` so that all rounds
//! fit. Last line: `fl_dp_accuracy: eps1 A eps4 B eps8 C no_dp D`.

use crate::fl::{Run, rounds_only, simulate_with};
use crate::split::build_and_issue;
use crate::util;
use anyhow::Result;

/// The clipping norm of every clipped row: after the first rounds, most updates of one
/// local epoch are longer (the table says how many were clipped).
const CLIP: &str = "1";
const DELTA: &str = "1e-5";

pub fn bench(args: &[String]) -> Result<()> {
    let rounds = rounds_only(args, "fl-dp", 50)?;
    let bin = build_and_issue("release")?;
    let common = [
        "--clients",
        "1000",
        "--clients-per-round",
        "100",
        "--partition",
        "iid",
        "--strategy",
        "fedavg",
        "--lr",
        "0.1",
        "--batch",
        "8",
        "--workers",
        "2",
    ];
    let rows: [(&str, &[&str]); 5] = [
        ("no DP", &[]),
        ("clipping alone", &["--clip", CLIP]),
        (
            "epsilon 8",
            &["--clip", CLIP, "--dp-epsilon", "8", "--dp-delta", DELTA],
        ),
        (
            "epsilon 4",
            &["--clip", CLIP, "--dp-epsilon", "4", "--dp-delta", DELTA],
        ),
        (
            "epsilon 1",
            &["--clip", CLIP, "--dp-epsilon", "1", "--dp-delta", DELTA],
        ),
    ];
    println!(
        "| central DP, {rounds} rounds, 100 of 1,000 clients, clip {CLIP} | rounds run | epsilon spent (delta {DELTA}) | updates clipped | test accuracy | s/round |\n|---|---|---|---|---|---|"
    );
    let mut accuracy = Vec::new();
    for (name, extra) in rows {
        eprintln!("fl-dp: {name}");
        let args = [&common[..], extra].concat();
        let metrics =
            util::target_dir().join(format!("bench-fl-dp-{}.json", name.replace(' ', "-")));
        let run: Run = simulate_with(&bin, "fmnist", rounds, &args, &metrics)?;
        println!(
            "| {name} | {} | {} | {:.0}% | {:.2}% | {:.2} |",
            run.rounds,
            run.epsilon.map_or("-".to_string(), |e| format!("{e:.2}")),
            100.0 * run.clipped_share,
            run.accuracy * 100.0,
            run.seconds / run.rounds.max(1) as f64
        );
        accuracy.push(run.accuracy * 100.0);
    }
    println!(
        "fl_dp_accuracy: eps1 {:.2} eps4 {:.2} eps8 {:.2} no_dp {:.2}",
        accuracy[4], accuracy[3], accuracy[2], accuracy[0]
    );
    Ok(())
}
