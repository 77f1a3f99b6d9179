//! `cargo xtask bench fl-attack [--rounds N]`: issue 30's Join-inflation attack on FedAvg,
//! simulated with the cloud's own aggregation code. Fashion-MNIST (IID), 10 clients, all
//! 10 in every round, 1 local epoch, batch 32, lr 0.05, seed 1: one client declares 2^24
//! examples and sends its update sign-flipped x10, beside nine honest ones, with the
//! networked cloud's default `--median-caps weight=1,norm=1`, with twice the median weight
//! (`weight=2,norm=1`, the default before it) and without (off), with and
//! without `--clip`, against the same runs unattacked.
//!
//! Last line: `fl_join_inflation: accuracy_delta X clip_accuracy_delta Y` (attacked
//! against unattacked, in points, with the default caps).

use crate::fl::{rounds_only, simulate_with};
use crate::split::build_and_issue;
use crate::util;
use anyhow::Result;

/// The attacker: one client of ten, its update sign-flipped x10, declaring 2^24 examples.
const ATTACK: [&str; 4] = [
    "--byzantine",
    "0.1:sign-flip:10",
    "--byzantine-examples",
    "16777216",
];

/// `serve --app fl`'s default `--median-caps`.
const DEFAULT_CAPS: &str = "weight=1,norm=1";

/// The clip of the `--clip` rows: about a median honest update's norm here.
const CLIP: &str = "2";

pub fn bench(args: &[String]) -> Result<()> {
    let rounds = rounds_only(args, "fl-attack", 20)?;
    let bin = build_and_issue("release")?;
    let base = [
        "--clients",
        "10",
        "--clients-per-round",
        "10",
        "--lr",
        "0.05",
        "--batch",
        "32",
        "--partition",
        "iid",
        "--strategy",
        "fedavg",
        "--eval-every",
        "5",
    ];
    println!(
        "| --median-caps | --clip | attack | accuracy after {rounds} rounds | clipped share | s/round |"
    );
    println!("|---|---|---|---|---|---|");
    let mut accuracy = std::collections::HashMap::new();
    for caps in [DEFAULT_CAPS, "weight=2,norm=1", "off"] {
        for clip in [None, Some(CLIP)] {
            for attacked in [false, true] {
                let mut run_args = base.to_vec();
                run_args.extend(["--median-caps", caps]);
                if let Some(clip) = clip {
                    run_args.extend(["--clip", clip]);
                }
                if attacked {
                    run_args.extend(ATTACK);
                }
                let name = format!(
                    "bench-fl-attack-{caps}-{}-{}.json",
                    clip.unwrap_or("noclip"),
                    if attacked { "attacked" } else { "calm" }
                )
                .replace([',', '='], "_");
                let out = util::target_dir().join(name);
                let run = simulate_with(&bin, "fmnist", rounds, &run_args, &out)?;
                println!(
                    "| {caps} | {} | {} | {:.2}% | {:.2} | {:.2} |",
                    clip.unwrap_or("none"),
                    if attacked {
                        "1 of 10: 2^24 examples, sign-flip x10"
                    } else {
                        "none"
                    },
                    run.accuracy * 100.0,
                    run.clipped_share,
                    run.seconds / rounds as f64
                );
                accuracy.insert((caps, clip.is_some(), attacked), run.accuracy);
            }
        }
    }
    let delta = |clip: bool| {
        let caps = DEFAULT_CAPS;
        (accuracy[&(caps, clip, true)] - accuracy[&(caps, clip, false)]) * 100.0
    };
    println!(
        "fl_join_inflation: accuracy_delta {:+.2} clip_accuracy_delta {:+.2}",
        delta(false),
        delta(true)
    );
    Ok(())
}
