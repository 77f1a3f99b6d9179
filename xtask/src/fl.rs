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
/// The demo's model codec down: int8 deltas against what each device acknowledged.
const DEMO_DOWNLINK: &str = "int8";

/// `cargo xtask demo fl [tandem-cloud serve flags]`, e.g. `--rounds 5`. Every device takes
/// part in every round, so `--clients-per-round` stays 4.
pub fn demo(extra: &[String]) -> Result<()> {
    let bin = build_and_issue("release")?;
    // `--rounds` in `extra` replaces the demo's; the devices stop after that many.
    let rounds = util::flag(extra, "--rounds").unwrap_or(DEMO_ROUNDS);
    // So do the flags below; the rest of `extra` goes to `tandem-cloud serve` as it is.
    let settings = [
        ("--strategy", "fedavg"),
        ("--codec", DEMO_CODEC),
        ("--downlink", DEMO_DOWNLINK),
        ("--local-lr", "0.05"),
    ]
    .map(|(flag, value)| (flag, util::flag(extra, flag).unwrap_or(value)));
    let mut serve: Vec<&str> = settings.iter().flat_map(|&(f, v)| [f, v]).collect();
    let own: Vec<&str> = settings.iter().map(|s| s.0).chain(["--rounds"]).collect();
    serve.extend(util::without_flags(extra, &own));
    let setting = |flag: &str| settings.iter().find(|s| s.0 == flag).map_or("", |s| s.1);
    eprintln!(
        "fl demo: {DEVICES} devices (Fashion-MNIST, shards:2 of 4 clients), {rounds} rounds, {}, {} up, {} down",
        setting("--strategy"),
        setting("--codec"),
        setting("--downlink"),
    );
    let state = std::env::current_dir()?.join("tandem-fl-state");
    let run = Loopback {
        devices: DEVICES,
        clients: DEVICES,
        partition: "shards:2",
        rounds,
        serve: &serve,
        state: &state,
    };
    run.run(&bin)?;
    println!(
        "metrics: {}, plot: {}",
        state.join("metrics.json").display(),
        state.join("accuracy.png").display()
    );
    Ok(())
}

/// A federated run on loopback: tandem-cloud and `devices` `tandem fl` processes with
/// mutual TLS, every device in every round.
struct Loopback<'a> {
    devices: usize,
    /// Device `i` holds client slice `i/clients` of the cached Fashion-MNIST.
    clients: usize,
    partition: &'a str,
    rounds: &'a str,
    /// Flags for `tandem-cloud serve --app fl` beyond the task, rounds, round size and state.
    serve: &'a [&'a str],
    /// Cleared first (a run starts afresh); the cloud's state and the device logs and
    /// checkpoints go there.
    state: &'a Path,
}

impl Loopback<'_> {
    fn run(&self, bin: &Path) -> Result<()> {
        issue_device_certificates(bin, self.devices)?;
        let state = self.state;
        if state.exists() {
            std::fs::remove_dir_all(state)
                .with_context(|| format!("cannot clear {}", state.display()))?;
        }
        let state_arg = state.to_string_lossy().into_owned();
        let per_round = self.devices.to_string();
        let mut args = vec![
            "--app",
            "fl",
            "--task",
            "fmnist",
            "--rounds",
            self.rounds,
            "--clients-per-round",
            &per_round,
            "--state",
            &state_arg,
        ];
        args.extend(self.serve);
        let mut cloud = CloudProcess::start(bin, &args)?;
        let mut devices: Vec<Child> = Vec::new();
        std::fs::create_dir_all(state)?;
        for i in 0..self.devices {
            // Each device's own lines go to its log: the cloud reports the rounds.
            let log = std::fs::File::create(state.join(format!("{}.log", device_name(i))))?;
            let spawned = Command::new(bin.join("tandem"))
                .args(["fl", "--cloud", &cloud.addr, "--node", &device_name(i)])
                .args([
                    "--client",
                    &format!("{i}/{}", self.clients),
                    "--partition",
                    self.partition,
                ])
                .args(["--rounds", self.rounds])
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
                "{failed} of {} devices failed; their logs: {}/fl-device-*.log",
                self.devices,
                state.display()
            );
        }
        Ok(())
    }
}

/// `cargo xtask bench fl-quic [--devices N] [--rounds R]`: N (default 8) `tandem fl`
/// processes and tandem-cloud on loopback QUIC with mutual TLS, R rounds (default 20) of
/// FedAvg over 600 images each, identity codec both ways. A round's overhead is its wall
/// time on the cloud (from encoding the tasks to the commit, before validation,
/// aggregation and evaluation) minus the slowest device's `train` call (decoding the
/// model, local training, encoding the update) in it: the wire both ways, the session
/// machines, and the wait for the slowest device's update to arrive. Last line:
/// `fl_quic_round_overhead_ms: p50 X p99 Y`.
pub fn quic_bench(args: &[String]) -> Result<()> {
    let devices: usize = util::flag(args, "--devices")
        .unwrap_or("8")
        .parse()
        .context("--devices")?;
    let rounds = util::flag(args, "--rounds").unwrap_or("20");
    if !(1..=64).contains(&devices) {
        bail!("--devices {devices}: expected 1..=64");
    }
    let bin = build_and_issue("release")?;
    let state = util::target_dir().join("bench-fl-quic");
    let serve = ["--strategy", "fedavg", "--local-lr", "0.05"];
    Loopback {
        devices,
        clients: 100,
        partition: "iid",
        rounds,
        serve: &serve,
        state: &state,
    }
    .run(&bin)?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("metrics.json"))?)?;
    let walls: Vec<(u64, f64)> = json["rounds"]
        .as_array()
        .context("metrics without rounds")?
        .iter()
        .filter_map(|r| Some((r["round"].as_u64()?, r["seconds"].as_f64()?)))
        .collect();
    let mut slowest = std::collections::HashMap::<u64, f64>::new();
    for i in 0..devices {
        let log = std::fs::read_to_string(state.join(format!("{}.log", device_name(i))))?;
        for (round, seconds) in log.lines().filter_map(training_seconds) {
            let entry = slowest.entry(round).or_default();
            *entry = entry.max(seconds);
        }
    }
    println!("| round | wall (s) | slowest device's training (s) | overhead (ms) |");
    println!("|---|---|---|---|");
    let mut overheads = Vec::new();
    for (round, wall) in walls {
        let Some(&train) = slowest.get(&round) else {
            continue;
        };
        let overhead = (wall - train) * 1e3;
        println!("| {round} | {wall:.3} | {train:.3} | {overhead:.1} |");
        overheads.push(overhead);
    }
    if overheads.is_empty() {
        bail!("no round with both a wall time and device training times");
    }
    println!(
        "fl_quic_round_overhead_ms: p50 {:.1} p99 {:.1} ({devices} devices, {} rounds)",
        util::quantile(&mut overheads, 0.5),
        util::quantile(&mut overheads, 0.99),
        overheads.len()
    );
    Ok(())
}

/// (round, seconds) of a device log's "round R: trained S steps in T s, ..." line.
fn training_seconds(line: &str) -> Option<(u64, f64)> {
    let rest = line.strip_prefix("round ")?;
    let (round, rest) = rest.split_once(": trained ")?;
    let seconds = rest.split_once(" steps in ")?.1.split_once(" s")?.0;
    Some((round.parse().ok()?, seconds.parse().ok()?))
}

/// The node name of loopback device `i`.
pub(crate) fn device_name(i: usize) -> String {
    format!("fl-device-{i}")
}

/// Issues the certificates of devices `0..devices` ([`device_name`]) where the cache
/// lacks them.
pub(crate) fn issue_device_certificates(bin: &Path, devices: usize) -> Result<()> {
    for i in 0..devices {
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
    Ok(())
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
        ("iid", "fedavg", "acp:r=4,bits=8", None),
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
pub(crate) struct Run {
    pub accuracy: f64,
    /// Examples trained on (a centralised run's metrics say).
    pub examples: Option<u64>,
    pub uplink: f64,
    pub seconds: f64,
    pub peak_rss_mib: f64,
    /// Rounds it ran (fewer than asked when a privacy budget stopped it).
    pub rounds: usize,
    /// Privacy spent, with central DP.
    pub epsilon: Option<f64>,
    /// Share of the aggregated updates that were clipped.
    pub clipped_share: f64,
    /// Share of the sampled devices that reported in time (under a device model).
    pub reported_share: Option<f64>,
}

/// The Fashion-MNIST population and local training of `bench fl` (and `bench fl-adapt`):
/// 100 clients, 10 a round, lr 0.05, batch 32.
pub(crate) const FMNIST_BASE: [&str; 8] = [
    "--clients",
    "100",
    "--clients-per-round",
    "10",
    "--lr",
    "0.05",
    "--batch",
    "32",
];

fn simulate(bin: &Path, config: &Config, rounds: u64, metrics: &Path) -> Result<Run> {
    let mut args = FMNIST_BASE.to_vec();
    args.extend([
        "--partition",
        config.partition,
        "--strategy",
        config.strategy,
        "--codec",
        config.codec,
    ]);
    if let Some(attack) = config.attack {
        args.extend(["--byzantine", attack]);
    }
    simulate_with(bin, "fmnist", rounds, &args, metrics)
}

/// The rounds of a bench that takes `--rounds N` and nothing else (`default` without
/// it); `usage` names the bench for the error.
pub(crate) fn rounds_only(args: &[String], bench: &str, default: u64) -> Result<u64> {
    if !util::without_flag(args, "--rounds").is_empty() {
        bail!("usage: cargo xtask bench {bench} [--rounds N]");
    }
    util::number_flag(args, "--rounds", default)
}

/// `tandem-cloud simulate` of `task` for `rounds` rounds (1 local epoch, seed 1) with
/// `args` added, under `/usr/bin/time`; its final figures.
pub(crate) fn simulate_with(
    bin: &Path,
    task: &str,
    rounds: u64,
    args: &[&str],
    metrics: &Path,
) -> Result<Run> {
    let plot = metrics.with_extension("png");
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin.join("tandem-cloud"))
        .args(["simulate", "--task", task, "--rounds", &rounds.to_string()])
        .args(["--local-epochs", "1", "--seed", "1"])
        .args(args)
        .arg("--metrics")
        .arg(metrics)
        .arg("--plot")
        .arg(&plot)
        .output()
        .context("cannot run /usr/bin/time (Debian package `time`) or tandem-cloud")?;
    if !output.status.success() {
        bail!(
            "simulate {} failed: {}",
            args.join(" "),
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
    if json["centralised"].as_bool() == Some(true) {
        return Ok(Run {
            accuracy: json["accuracy"].as_f64().context("accuracy")?,
            examples: json["examples"].as_u64(),
            uplink: 0.0,
            seconds: json["seconds"].as_f64().unwrap_or(f64::NAN),
            peak_rss_mib: peak_rss_kib / 1024.0,
            rounds: 0,
            epsilon: None,
            clipped_share: 0.0,
            reported_share: None,
        });
    }
    let records = json["rounds"]
        .as_array()
        .context("metrics without rounds")?;
    let last = records.last().context("no rounds")?;
    Ok(Run {
        accuracy: last["accuracy"].as_f64().context("accuracy")?,
        examples: None,
        uplink: records
            .iter()
            .filter_map(|r| r["uplink_bytes"].as_f64())
            .sum(),
        seconds: records.iter().filter_map(|r| r["seconds"].as_f64()).sum(),
        peak_rss_mib: peak_rss_kib / 1024.0,
        rounds: records.len(),
        epsilon: last["epsilon"].as_f64(),
        clipped_share: {
            let sum = |key: &str| -> f64 { records.iter().filter_map(|r| r[key].as_f64()).sum() };
            sum("clipped") / sum("aggregated").max(1.0)
        },
        reported_share: {
            let plans: Vec<&serde_json::Value> = records
                .iter()
                .filter_map(|r| r["plans"].as_array())
                .flatten()
                .collect();
            let late = |p: &&serde_json::Value| {
                matches!(p["reason"].as_str(), Some("sits-out" | "straggler"))
            };
            (!plans.is_empty())
                .then(|| plans.iter().filter(|p| !late(p)).count() as f64 / plans.len() as f64)
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_training_seconds_of_a_device_line() {
        let line = "round 12: trained 19 steps in 0.842 s, loss 0.512, sending 1234 bytes";
        assert_eq!(super::training_seconds(line), Some((12, 0.842)));
        assert_eq!(
            super::training_seconds("round 3: committed (4 accepted, 0 refused)"),
            None
        );
    }
}
