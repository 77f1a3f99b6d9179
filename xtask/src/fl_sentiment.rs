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

use crate::fl::{Run, simulate_with};
use crate::split::build_and_issue;
use crate::util;
use anyhow::{Result, bail};

/// The centralised baseline's learning rate (best of 0.002, 0.005, 0.02 on dev).
const CENTRAL_LR: &str = "0.005";
/// The federated rows' local learning rate and strategy (see BENCHMARKS.md for the
/// settings tried on dev).
const FL_LR: &str = "0.05";
const STRATEGY: &str = "fedavg";
/// The compressing codec.
const CODEC: &str = "topk:ratio=0.03";

pub fn bench(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a.starts_with("--") && a != "--rounds") {
        bail!("usage: cargo xtask bench fl-sentiment [--rounds N]");
    }
    let rounds: u64 = util::number_flag(args, "--rounds", 40)?;
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
    let federated = ["--lr", FL_LR, "--strategy", STRATEGY, "--codec"];
    let rows: [(&str, Vec<&str>); 3] = [
        ("centralised", vec!["--centralised", "--lr", CENTRAL_LR]),
        (
            "federated, f32 updates",
            [&federated[..], &["identity"]].concat(),
        ),
        ("federated, compressed", [&federated[..], &[CODEC]].concat()),
    ];
    println!(
        "| sentiment, {rounds} rounds of 10 movies | codec | examples seen | test accuracy | uplink per round (KB) | vs f32 | wall time (s) |\n|---|---|---|---|---|---|---|"
    );
    let mut runs: Vec<Run> = Vec::new();
    for (name, extra) in rows {
        eprintln!("fl-sentiment: {name}");
        let args: Vec<String> = common.iter().chain(&extra).map(|a| a.to_string()).collect();
        let metrics = util::target_dir().join(format!("bench-fl-sentiment-{}.json", runs.len()));
        let run = simulate_with(&bin, "sentiment", rounds, &args, &metrics)?;
        let codec = extra
            .last()
            .filter(|_| run.rounds > 0)
            .copied()
            .unwrap_or("-");
        let examples = run
            .examples
            .or(runs.first().and_then(|c| c.examples))
            .map_or("-".to_string(), |e| e.to_string());
        let per_round = run.uplink / rounds.max(1) as f64;
        let versus = runs
            .get(1)
            .map_or(1.0, |f32_run| f32_run.uplink / run.uplink.max(1.0));
        let (uplink, versus) = if run.rounds == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.1}", per_round / 1e3), format!("{versus:.1}x"))
        };
        println!(
            "| {name} | {codec} | {examples} | {:.2}% | {uplink} | {versus} | {:.0} |",
            run.accuracy * 100.0,
            run.seconds
        );
        runs.push(run);
    }
    println!(
        "fl_sentiment_accuracy_delta: {:+.2} uplink_reduction: {:.1}",
        (runs[2].accuracy - runs[0].accuracy) * 100.0,
        runs[1].uplink / runs[2].uplink.max(1.0)
    );
    Ok(())
}
