//! `cargo xtask bench fl-sentiment [--rounds N]`: federated fine-tuning of MiniLM's LoRA
//! adapters (rank 8, query and value, every layer) and a linear head on Rotten Tomatoes,
//! one client per training movie, against centralised fine-tuning of the same adapters
//! on the same number of examples.
//!
//! Rows, all seed 1, batch 8, local SGD with momentum 0.9 and logit adjustment, test movies
//! for the figure, each arm at the learning rate it did best with on the dev movies: the
//! centralised baseline (`simulate --centralised`: one pass over as many examples, pooled
//! from all movies, as the federated rounds train on); federated rounds of 10 movies with
//! f32 updates; and the same with the compressing codec. Last
//! line: `fl_sentiment_accuracy_delta: X uplink_reduction: Y`, X the compressed federated
//! run's test accuracy less the centralised one (points), Y its uplink against f32
//! updates of the adapters and head.

use crate::fl::{rounds_only, simulate_with};
use crate::split::build_and_issue;
use crate::util;
use anyhow::Result;

/// The centralised baseline's learning rate (best of 0.002, 0.005, 0.02 on dev).
const CENTRAL_LR: &str = "0.005";
/// The federated rows' local learning rate and strategy (see BENCHMARKS.md for the
/// settings tried on dev).
const FL_LR: &str = "0.05";
const STRATEGY: &str = "fedavg";
/// The compressing codec.
const CODEC: &str = "topk:ratio=0.03";

pub fn bench(args: &[String]) -> Result<()> {
    let rounds = rounds_only(args, "fl-sentiment", 40)?;
    let bin = build_and_issue("release")?;
    let common = [
        "--clients-per-round",
        "10",
        "--batch",
        "8",
        "--lora-rank",
        "8",
        "--eval-every",
        "10",
    ];
    println!(
        "| sentiment, {rounds} rounds of 10 movies | codec | examples seen | test accuracy | uplink per round (KB) | vs f32 | wall time (s) |\n|---|---|---|---|---|---|---|"
    );
    // The centralised baseline, then the federated rows by codec.
    eprintln!("fl-sentiment: centralised");
    let central_args = [&common[..], &["--centralised", "--lr", CENTRAL_LR]].concat();
    let metrics = |row: &str| util::target_dir().join(format!("bench-fl-sentiment-{row}.json"));
    let central = simulate_with(&bin, "sentiment", rounds, &central_args, &metrics("0"))?;
    let examples = central.examples.map_or("-".to_string(), |e| e.to_string());
    println!(
        "| centralised | - | {examples} | {:.2}% | - | - | {:.0} |",
        central.accuracy * 100.0,
        central.seconds
    );
    // Uplink of the f32 row, which the compressed one is measured against.
    let mut f32_uplink = None;
    let mut compressed = None;
    for (row, name, codec) in [
        ("1", "federated, f32 updates", "identity"),
        ("2", "federated, compressed", CODEC),
    ] {
        eprintln!("fl-sentiment: {name}");
        let args = [
            &common[..],
            &["--lr", FL_LR, "--strategy", STRATEGY, "--codec", codec],
        ]
        .concat();
        let run = simulate_with(&bin, "sentiment", rounds, &args, &metrics(row))?;
        let reference = *f32_uplink.get_or_insert(run.uplink);
        println!(
            "| {name} | {codec} | {examples} | {:.2}% | {:.1} | {:.1}x | {:.0} |",
            run.accuracy * 100.0,
            run.uplink / rounds.max(1) as f64 / 1e3,
            reference / run.uplink.max(1.0),
            run.seconds
        );
        compressed = Some(run);
    }
    let compressed = compressed.expect("two federated rows");
    println!(
        "fl_sentiment_accuracy_delta: {:+.2} uplink_reduction: {:.1}",
        (compressed.accuracy - central.accuracy) * 100.0,
        f32_uplink.unwrap_or(0.0) / compressed.uplink.max(1.0)
    );
    Ok(())
}
