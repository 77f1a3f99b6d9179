//! `cargo xtask bench split`: identity against one or more codecs, the same seeds, data
//! order and steps for every arm, several seeds and cuts, and the table of
//! BENCHMARKS.md (mean and spread over seeds, bytes per real token both ways).

use crate::split::{build_and_issue, run_split};
use crate::util;
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The headline codec when none is named (the best measured at 96x or more both ways).
const DEFAULT_CODEC: &str = "sft-w2:r=15,bits=8";

/// One run's numbers, read from its metrics file.
struct Measured {
    accuracy: f64,
    examples: u64,
    up_per_token: f64,
    down_per_token: f64,
    compute_ms: f64,
    encode_ms: f64,
    round_trip_ms: f64,
    backward_ms: f64,
    cloud_ms: Option<f64>,
    peak_rss_mib: f64,
}

/// Where the run of `codec` at `cut` with `seed` writes its metrics; `variant` names the
/// flags that change what a run measures (empty for the default train-bottom run).
fn metrics_path(variant: &str, codec: &str, cut: &str, seed: &str) -> PathBuf {
    util::target_dir().join(format!(
        "bench-split-{}{variant}-cut{cut}-seed{seed}.json",
        codec.replace([':', ',', '='], "_")
    ))
}

/// The bench's settings, from its command line.
struct Plan {
    codecs: Vec<String>,
    seeds: Vec<String>,
    cuts: Vec<String>,
    /// Take runs whose metrics file exists from it instead of running them again.
    reuse: bool,
    /// Flags for every `tandem split` (the bench's own removed).
    device: Vec<String>,
    /// `-frozen-bottom`, `-cached`, both or nothing: keeps metrics files of different
    /// protocols apart (and `--reuse` from mixing them).
    variant: String,
}

impl Plan {
    fn parse(args: &[String]) -> Result<Self> {
        let codecs: Vec<String> = args
            .iter()
            .take_while(|a| !a.starts_with("--"))
            .cloned()
            .collect();
        let rest = &args[codecs.len()..];
        let list = |name: &str, default: &str| -> Result<Vec<String>> {
            let items: Vec<String> = util::flag(rest, name)
                .unwrap_or(default)
                .split(',')
                .map(str::to_string)
                .collect();
            if items.iter().any(|i| i.parse::<u64>().is_err()) {
                bail!("{name} takes numbers separated by commas, e.g. {default}");
            }
            Ok(items)
        };
        let reuse = rest.iter().any(|a| a == "--reuse");
        let mut device: Vec<String> = util::without_flags(rest, &["--seeds", "--cuts"])
            .into_iter()
            .filter(|a| *a != "--reuse")
            .map(str::to_string)
            .collect();
        for flag in ["--seed", "--cut", "--codec"] {
            if util::flag(rest, flag).is_some() {
                bail!("`{flag}` is the bench's: use --seeds, --cuts or name codecs first");
            }
        }
        // The acceptance protocol unless asked otherwise: 2 epochs, dev and test.
        if util::flag(rest, "--steps").is_none() && util::flag(rest, "--epochs").is_none() {
            device.extend(["--epochs".into(), "2".into()]);
        }
        if util::flag(rest, "--held-out").is_none() {
            device.extend(["--held-out".into(), "dev-and-test".into()]);
        }
        let mut variant = String::new();
        if let Some(mode) = util::flag(rest, "--mode").filter(|m| *m != "train-bottom") {
            variant.push('-');
            variant.push_str(mode);
        }
        if rest.iter().any(|a| a == "--cache-codes") {
            variant.push_str("-cached");
        }
        Ok(Self {
            variant,
            codecs: if codecs.is_empty() {
                vec![DEFAULT_CODEC.into()]
            } else {
                codecs
            },
            seeds: list("--seeds", "1,2")?,
            // The headline: at cut 4 the SFT code costs under a point (cut 2: three).
            cuts: list("--cuts", "4")?,
            reuse,
            device,
        })
    }
}

/// `cargo xtask bench split [CODEC..] [--seeds 1,2] [--cuts 4] [--reuse] [--cloud-lr LR]
/// [tandem split flags]`: for each cut and seed, identity and then each CODEC (default
/// `sft-w2:r=15,bits=8`, the headline of BENCHMARKS.md), 2 epochs and the final accuracy on dev and test unless the flags
/// say otherwise. Each run prints its row as it ends and keeps its metrics file; with
/// `--reuse` a run whose file exists is read from it, not run again (so an interrupted
/// bench continues; the files do not record the flags: reuse only with the same ones).
/// The table averages over seeds. Last line, for the first codec at the first cut:
/// `split_uplink_reduction: X accuracy_delta: Y`.
pub fn bench(args: &[String]) -> Result<()> {
    let plan = Plan::parse(args)?;
    let bin = build_and_issue("release")?;
    let arms: Vec<&str> = std::iter::once("identity")
        .chain(plan.codecs.iter().map(String::as_str))
        .collect();
    // runs[cut][arm][seed]
    let mut runs: Vec<Vec<Vec<Measured>>> = Vec::new();
    for cut in &plan.cuts {
        let mut by_arm: Vec<Vec<Measured>> = arms.iter().map(|_| Vec::new()).collect();
        for seed in &plan.seeds {
            for (arm, codec) in arms.iter().enumerate() {
                let compare = (arm > 0).then(|| metrics_path(&plan.variant, "identity", cut, seed));
                let m = bench_run(&bin, &plan, codec, cut, seed, compare.as_deref())?;
                println!(
                    "bench split: cut {cut} seed {seed} {codec}: {:.2}% on {} reviews, {:.1} B/token up, {:.1} down",
                    m.accuracy * 100.0,
                    m.examples,
                    m.up_per_token,
                    m.down_per_token
                );
                by_arm[arm].push(m);
            }
        }
        runs.push(by_arm);
    }
    println!();
    println!(
        "| cut | codec | accuracy (mean ± half-range) | per seed | up B/token | down B/token | up vs identity | down vs identity | device fwd ms | encode ms | network+cloud ms | cloud ms | backward ms | device peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut headline = None;
    for (cut, by_arm) in plan.cuts.iter().zip(&runs) {
        let identity = &by_arm[0];
        for (codec, measured) in arms.iter().zip(by_arm) {
            let (mean, half) = mean_and_half_range(measured.iter().map(|m| m.accuracy));
            let up = mean_of(measured, |m| m.up_per_token);
            let down = mean_of(measured, |m| m.down_per_token);
            let up_ratio = mean_of(identity, |m| m.up_per_token) / up;
            let down_ratio = mean_of(identity, |m| m.down_per_token) / down;
            let per_seed: Vec<String> = measured
                .iter()
                .map(|m| format!("{:.2}", m.accuracy * 100.0))
                .collect();
            let cloud: Vec<f64> = measured.iter().filter_map(|m| m.cloud_ms).collect();
            println!(
                "| {cut} | {codec} | {:.2} ± {:.2}% | {} | {up:.1} | {down:.1} | {up_ratio:.1}x | {down_ratio:.1}x | {:.1} | {:.2} | {:.1} | {} | {:.1} | {:.0} |",
                mean * 100.0,
                half * 100.0,
                per_seed.join(" / "),
                mean_of(measured, |m| m.compute_ms),
                mean_of(measured, |m| m.encode_ms),
                mean_of(measured, |m| m.round_trip_ms),
                if cloud.is_empty() {
                    "-".into()
                } else {
                    format!("{:.1}", cloud.iter().sum::<f64>() / cloud.len() as f64)
                },
                mean_of(measured, |m| m.backward_ms),
                measured.iter().map(|m| m.peak_rss_mib).fold(0.0, f64::max),
            );
            if headline.is_none() && *codec != "identity" {
                let (base, _) = mean_and_half_range(identity.iter().map(|m| m.accuracy));
                headline = Some((up_ratio, (mean - base) * 100.0));
            }
        }
    }
    if let Some((reduction, delta)) = headline {
        println!("split_uplink_reduction: {reduction:.1} accuracy_delta: {delta:+.2}");
    }
    Ok(())
}

/// One run of `codec` at `cut` with `seed`; its plot drawn beside `compare_with`'s run.
fn bench_run(
    bin: &Path,
    plan: &Plan,
    codec: &str,
    cut: &str,
    seed: &str,
    compare_with: Option<&Path>,
) -> Result<Measured> {
    let metrics = metrics_path(&plan.variant, codec, cut, seed);
    let plot = metrics.with_extension("png");
    let label = format!("{codec} (seed {seed})");
    let mut own: Vec<&OsStr> = vec![
        "--codec".as_ref(),
        codec.as_ref(),
        "--cut".as_ref(),
        cut.as_ref(),
        "--seed".as_ref(),
        seed.as_ref(),
        "--label".as_ref(),
        label.as_ref(),
        "--metrics".as_ref(),
        metrics.as_os_str(),
        "--plot".as_ref(),
        plot.as_os_str(),
    ];
    if let Some(path) = compare_with {
        own.extend(["--plot-with".as_ref(), path.as_os_str()]);
    }
    if plan.reuse && metrics.exists() {
        println!("bench split: reusing {}", metrics.display());
        return read_metrics(&metrics, None);
    }
    let lines = run_split(bin, &plan.device, &own)?;
    let cloud_ms = lines.iter().find_map(|l| {
        l.strip_prefix("cloud compute: ")?
            .split(", ")
            .nth(1)?
            .strip_suffix(" ms/step")?
            .parse()
            .ok()
    });
    read_metrics(&metrics, cloud_ms)
}

/// A run's numbers from its metrics file; `cloud_ms` as the cloud printed it (not in the
/// file).
fn read_metrics(metrics: &Path, cloud_ms: Option<f64>) -> Result<Measured> {
    let text =
        std::fs::read_to_string(metrics).with_context(|| format!("{}", metrics.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let steps = json["steps"].as_array().context("metrics without steps")?;
    let sum = |key: &str| steps.iter().filter_map(|s| s[key].as_f64()).sum::<f64>();
    let mean = |key: &str| sum(key) / steps.len().max(1) as f64;
    let tokens = sum("tokens").max(1.0);
    Ok(Measured {
        accuracy: json["test"]["accuracy"]
            .as_f64()
            .context("no final accuracy")?,
        examples: json["test"]["examples"].as_u64().unwrap_or(0),
        up_per_token: sum("up_bytes") / tokens,
        down_per_token: sum("down_bytes") / tokens,
        compute_ms: mean("compute_ms"),
        encode_ms: mean("encode_ms"),
        round_trip_ms: mean("round_trip_ms"),
        backward_ms: mean("backward_ms"),
        cloud_ms,
        peak_rss_mib: json["peak_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0,
    })
}

fn mean_of(runs: &[Measured], f: impl Fn(&Measured) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
}

/// Mean and half the range (max - min) / 2: with 2 seeds, the distance of each from
/// the mean.
fn mean_and_half_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = values.collect();
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    (
        mean,
        if values.is_empty() {
            0.0
        } else {
            (hi - lo) / 2.0
        },
    )
}
