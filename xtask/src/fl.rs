//! Federated learning on loopback and in simulation: `cargo xtask demo fl` (tandem-cloud
//! and four `tandem fl` device processes with mutual TLS) and `cargo xtask bench fl`
//! (`tandem-cloud simulate` over strategies, partitions and codecs, the table of
//! BENCHMARKS.md).

use crate::split::{CloudProcess, build_and_issue};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Child, Command};

/// Devices in the demo.
const DEVICES: usize = 4;

/// The demo's settings, also printed for the user.
const DEMO_ROUNDS: &str = "20";
const DEMO_CODEC: &str = "topk:ratio=0.01";

/// `cargo xtask demo fl [tandem-cloud serve flags]`, e.g. `--rounds 5`. Every device takes
/// part in every round, so `--clients-per-round` stays 4.
pub fn demo(extra: &[String]) -> Result<()> {
    let bin = build_and_issue("release")?;
    for i in 0..DEVICES {
        let node = device_name(i);
        let cert = util::cache_dir()
            .join("pki/devices")
            .join(format!("{node}-cert.pem"));
        if !cert.exists() {
            util::run(
                Command::new(bin.join("tandem-cloud")).args(["ca", "issue", "--node", &node]),
            )?;
        }
    }
    let state = std::env::current_dir()?.join("tandem-fl-state");
    // A demo starts afresh (the devices' checkpoints live in the same directory); a real
    // run resumes from its --state.
    if state.exists() {
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("cannot clear {}", state.display()))?;
    }
    let state_arg = state.to_string_lossy().into_owned();
    // `--rounds` in `extra` replaces the demo's; the devices stop after that many.
    let rounds = util::flag(extra, "--rounds").unwrap_or(DEMO_ROUNDS);
    let mut args = vec![
        "--app",
        "fl",
        "--task",
        "fmnist",
        "--rounds",
        rounds,
        "--clients-per-round",
        "4",
        "--strategy",
        "fedavg",
        "--codec",
        DEMO_CODEC,
        "--local-lr",
        "0.05",
        "--state",
        &state_arg,
    ];
    args.extend(util::without_flag(extra, "--rounds"));
    eprintln!(
        "fl demo: {DEVICES} devices (Fashion-MNIST, shards:2 of 4 clients), {rounds} rounds, fedavg, {DEMO_CODEC}"
    );
    let mut cloud = CloudProcess::start(&bin, &args)?;
    let mut devices: Vec<Child> = Vec::new();
    std::fs::create_dir_all(&state)?;
    for i in 0..DEVICES {
        // Each device's own lines go to its log: the cloud reports the rounds.
        let log = std::fs::File::create(state.join(format!("{}.log", device_name(i))))?;
        let spawned = Command::new(bin.join("tandem"))
            .args(["fl", "--cloud", &cloud.addr, "--node", &device_name(i)])
            .args([
                "--client",
                &format!("{i}/{DEVICES}"),
                "--partition",
                "shards:2",
            ])
            .args(["--rounds", rounds])
            .arg("--checkpoint")
            .arg(state.join(format!("{}.checkpoint", device_name(i))))
            .stderr(log)
            .spawn()
            .context("cannot start tandem fl");
        match spawned {
            Ok(child) => devices.push(child),
            Err(err) => {
                stop_all(&mut devices);
                cloud.stop();
                return Err(err);
            }
        }
    }
    let mut failed = 0;
    for device in &mut devices {
        if !device.wait().is_ok_and(|s| s.success()) {
            failed += 1;
        }
    }
    cloud.stop();
    if failed > 0 {
        bail!(
            "{failed} of {DEVICES} devices failed; their logs: {}/fl-device-*.log",
            state.display()
        );
    }
    println!(
        "metrics: {}, plot: {}",
        state.join("metrics.json").display(),
        state.join("accuracy.png").display()
    );
    Ok(())
}

fn device_name(i: usize) -> String {
    format!("fl-device-{i}")
}

fn stop_all(children: &mut [Child]) {
    for child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One simulated configuration of the benchmark.
struct Config {
    partition: &'static str,
    strategy: &'static str,
    codec: &'static str,
    /// `--byzantine` of the run, if any.
    attack: Option<&'static str>,
}

/// `cargo xtask bench fl [--rounds N]`: the table of BENCHMARKS.md. Fashion-MNIST, 100
/// clients, 10 per round, 1 local epoch, batch 32, SGD lr 0.05 momentum 0.9, seed 1.
/// Last line: `fl_uplink_reduction: X accuracy_delta: Y` (the smallest IID uplink within
/// 1 point of identity FedAvg, against identity FedAvg).
pub fn bench(args: &[String]) -> Result<()> {
    let rounds = match args {
        [] => 100,
        [flag, n] if flag == "--rounds" => n.parse().context("--rounds")?,
        _ => bail!("usage: cargo xtask bench fl [--rounds N]"),
    };
    let bin = build_and_issue("release")?;
    const FLIP: Option<&str> = Some("0.2:sign-flip:10");
    let configs = [
        ("iid", "fedavg", "identity", None),
        ("iid", "fedavg", "topk:ratio=0.01", None),
        ("iid", "fedavg", "topk:ratio=0.001", None),
        ("iid", "fedavg", "lowrank:r=4,bits=8", None),
        ("iid", "fedavg", "int8", None),
        ("shards:2", "fedavg", "identity", None),
        ("shards:2", "fedavgm", "identity", None),
        ("shards:2", "fedadam:lr=0.01,tau=0.001", "identity", None),
        ("shards:2", "fedavg", "topk:ratio=0.01", None),
        ("iid", "fedavg", "identity", FLIP),
        ("iid", "median", "identity", FLIP),
        ("iid", "trimmed-mean:beta=0.3", "identity", FLIP),
        ("iid", "multi-krum:f=2,m=5", "identity", FLIP),
    ]
    .map(|(partition, strategy, codec, attack)| Config {
        partition,
        strategy,
        codec,
        attack,
    });
    println!(
        "| partition | strategy | codec | hostile clients | accuracy after {rounds} rounds | uplink per round (MB) | uplink in all (MB) | s/round | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut iid: Vec<(String, f64, f64)> = Vec::new();
    for config in &configs {
        let out = util::target_dir().join(
            format!(
                "bench-fl-{}-{}-{}-{}.json",
                config.partition,
                config.strategy,
                config.codec,
                config.attack.unwrap_or("honest")
            )
            .replace([':', ',', '='], "_"),
        );
        let run = simulate(&bin, config, rounds, &out)?;
        println!(
            "| {} | {} | {} | {} | {:.2}% | {:.3} | {:.1} | {:.2} | {:.0} |",
            config.partition,
            config.strategy,
            config.codec,
            config.attack.unwrap_or("none"),
            run.accuracy * 100.0,
            run.uplink / rounds as f64 / 1e6,
            run.uplink / 1e6,
            run.seconds / rounds as f64,
            run.peak_rss_mib
        );
        if config.partition == "iid" && config.strategy == "fedavg" && config.attack.is_none() {
            iid.push((config.codec.to_string(), run.accuracy, run.uplink));
        }
    }
    let (_, base_acc, base_up) = iid.first().cloned().context("no identity run")?;
    let best = iid
        .iter()
        .filter(|(_, acc, _)| *acc >= base_acc - 0.01)
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .cloned()
        .unwrap_or_else(|| iid[0].clone());
    println!(
        "best IID codec within 1 point: {} ({:.2}% vs {:.2}%)",
        best.0,
        best.1 * 100.0,
        base_acc * 100.0
    );
    println!(
        "fl_uplink_reduction: {:.1} accuracy_delta: {:+.2}",
        base_up / best.2,
        (best.1 - base_acc) * 100.0
    );
    Ok(())
}

/// A simulation's final figures.
struct Run {
    accuracy: f64,
    uplink: f64,
    seconds: f64,
    peak_rss_mib: f64,
}

fn simulate(bin: &Path, config: &Config, rounds: u64, metrics: &Path) -> Result<Run> {
    let plot = metrics.with_extension("png");
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin.join("tandem-cloud"))
        .args([
            "simulate",
            "--task",
            "fmnist",
            "--clients",
            "100",
            "--clients-per-round",
            "10",
        ])
        .args([
            "--rounds",
            &rounds.to_string(),
            "--local-epochs",
            "1",
            "--batch",
            "32",
        ])
        .args(["--lr", "0.05", "--seed", "1"])
        .args([
            "--partition",
            config.partition,
            "--strategy",
            config.strategy,
            "--codec",
            config.codec,
        ])
        .arg("--metrics")
        .arg(metrics)
        .arg("--plot")
        .arg(&plot)
        .args(
            config
                .attack
                .map(|a| ["--byzantine", a])
                .into_iter()
                .flatten(),
        )
        .output()
        .context("cannot run /usr/bin/time (Debian package `time`) or tandem-cloud")?;
    if !output.status.success() {
        bail!(
            "simulate {} {} {} failed: {}",
            config.partition,
            config.strategy,
            config.codec,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let peak_rss_kib: f64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(metrics)?)?;
    let records = json["rounds"]
        .as_array()
        .context("metrics without rounds")?;
    let last = records.last().context("no rounds")?;
    Ok(Run {
        accuracy: last["accuracy"].as_f64().context("accuracy")?,
        uplink: records
            .iter()
            .filter_map(|r| r["uplink_bytes"].as_f64())
            .sum(),
        seconds: records.iter().filter_map(|r| r["seconds"].as_f64()).sum(),
        peak_rss_mib: peak_rss_kib / 1024.0,
    })
}
