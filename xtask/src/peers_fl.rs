//! The federated half of `cargo xtask bench peers`: `tandem-cloud simulate` against
//! Flower's simulation with PyTorch, the same settings, data and cores (see
//! [`crate::peers`]).

use crate::peers::CORES;
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CLIENTS: &str = "100";
const PER_ROUND: &str = "10";
const ROUNDS: &str = "50";
const LR: &str = "0.05";

/// One side's figures.
struct Side {
    /// Median seconds per round, the first left out (start-up).
    round_s: f64,
    /// The first round's seconds.
    first_s: f64,
    /// Peak proportional set size (PSS: shared pages split among the processes that map
    /// them) of every process of the simulation together, MiB.
    peak_rss_mib: f64,
    /// Test accuracy after the last round.
    accuracy: f64,
    /// Bytes a round moves between the server and its clients.
    round_bytes: f64,
}

/// Both sides.
pub struct Comparison {
    tandem: Side,
    flower: Side,
    flower_version: String,
}

impl Comparison {
    /// tandem's median seconds per round.
    pub fn tandem_round_s(&self) -> f64 {
        self.tandem.round_s
    }

    /// Flower's seconds per round over tandem's.
    pub fn speedup(&self) -> f64 {
        self.flower.round_s / self.tandem.round_s
    }

    pub fn print(&self) {
        println!(
            "\n| federated simulation: LeNet-5, Fashion-MNIST, {CLIENTS} clients IID, {PER_ROUND} per round, 1 local epoch, {ROUNDS} rounds, cores {CORES} | s/round (median) | first round s | peak PSS MiB (all processes) | test accuracy after {ROUNDS} | MB per round |\n|---|---|---|---|---|---|"
        );
        for (name, side) in [
            (
                "tandem-cloud simulate (2 workers)".to_string(),
                &self.tandem,
            ),
            (
                format!(
                    "Flower {} simulation (Ray, 2 CPUs) + PyTorch",
                    self.flower_version
                ),
                &self.flower,
            ),
        ] {
            println!(
                "| {name} | {:.2} | {:.2} | {:.0} | {:.2}% | {:.2} |",
                side.round_s,
                side.first_s,
                side.peak_rss_mib,
                side.accuracy * 100.0,
                side.round_bytes / 1e6
            );
        }
    }
}

/// `tandem-cloud simulate`'s arguments for this comparison, `rounds` rounds on `workers`
/// workers (also counted on aarch64, [`crate::peers_aarch64`]).
pub fn simulate_args<'a>(rounds: &'a str, workers: &'a str) -> Vec<&'a str> {
    vec![
        "simulate",
        "--clients",
        CLIENTS,
        "--clients-per-round",
        PER_ROUND,
        "--rounds",
        rounds,
        "--partition",
        "iid",
        "--strategy",
        "fedavg",
        "--codec",
        "identity",
        "--local-epochs",
        "1",
        "--batch",
        "32",
        "--lr",
        LR,
        "--momentum",
        "0.9",
        "--workers",
        workers,
        "--seed",
        "1",
    ]
}

/// Runs both simulations.
pub fn compare(python: &Path, bin: &Path, dir: &Path) -> Result<Comparison> {
    eprintln!("peers: tandem-cloud simulate, {ROUNDS} rounds");
    let metrics = dir.join("tandem-fl.json");
    let mut tandem = Command::new("taskset");
    tandem
        .args(["-c", CORES])
        .arg(bin.join("tandem-cloud"))
        .args(simulate_args(ROUNDS, "2"))
        .arg("--metrics")
        .arg(&metrics)
        .arg("--plot")
        .arg(dir.join("tandem-fl.png"));
    let (_, tandem_rss) = run_sampling(&mut tandem, &dir.join("tandem-fl.out"))?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics)?)?;
    let records = json["rounds"]
        .as_array()
        .context("metrics without rounds")?;
    let field = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap_or(f64::NAN);
    let seconds: Vec<f64> = records.iter().map(|r| field(r, "seconds")).collect();
    let bytes: Vec<f64> = records
        .iter()
        .map(|r| field(r, "uplink_bytes") + field(r, "downlink_bytes"))
        .collect();
    let tandem = Side {
        round_s: median_after_first(&seconds)?,
        first_s: seconds[0],
        peak_rss_mib: tandem_rss,
        accuracy: records.last().map_or(f64::NAN, |r| field(r, "accuracy")),
        round_bytes: bytes.iter().sum::<f64>() / bytes.len() as f64,
    };

    eprintln!("peers: Flower simulation, {ROUNDS} rounds");
    let mut flower = Command::new("taskset");
    flower
        .args(["-c", CORES])
        .arg(python)
        .arg(util::workspace_root().join("bench/peers/flower_fl.py"))
        .args([
            "--clients",
            CLIENTS,
            "--per-round",
            PER_ROUND,
            "--rounds",
            ROUNDS,
        ])
        .args(["--lr", LR, "--cpus", "2"]);
    let (out, flower_rss) = run_sampling(&mut flower, &dir.join("flower-fl.out"))?;
    let mut seconds = Vec::new();
    let mut accuracy = f64::NAN;
    let mut round_bytes = f64::NAN;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("round ") {
            let (_, rest) = rest.split_once(": ").context("a round line")?;
            let (s, rest) = rest
                .split_once(" s, test accuracy ")
                .context("a round line")?;
            seconds.push(s.parse::<f64>()?);
            accuracy = rest.trim().parse()?;
        } else if let Some((_, per_round)) = line.split_once("per round ") {
            round_bytes = per_round.trim_end_matches(" bytes").parse()?;
        }
    }
    if seconds.len().to_string() != ROUNDS {
        bail!(
            "Flower ran {} of {ROUNDS} rounds (see {})",
            seconds.len(),
            dir.display()
        );
    }
    let flower = Side {
        round_s: median_after_first(&seconds)?,
        first_s: seconds[0],
        peak_rss_mib: flower_rss,
        accuracy,
        round_bytes,
    };
    let version =
        util::output(Command::new(python).args(["-c", "import flwr; print(flwr.__version__)"]))
            .unwrap_or_default();
    Ok(Comparison {
        tandem,
        flower,
        flower_version: version.trim().to_string(),
    })
}

/// The median of `seconds` without the first (start-up).
fn median_after_first(seconds: &[f64]) -> Result<f64> {
    let mut rest = seconds.get(1..).unwrap_or_default().to_vec();
    if rest.is_empty() {
        bail!("fewer than two rounds");
    }
    Ok(util::quantile(&mut rest, 0.5))
}

/// Runs `cmd` to its end with its output in `log`, sampling the memory of it and all its
/// descendants together (PSS) every 200 ms; its output and the peak in MiB.
fn run_sampling(cmd: &mut Command, log: &Path) -> Result<(String, f64)> {
    let mut child = cmd
        .stdout(std::fs::File::create(log)?)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", util::describe(cmd)))?;
    let mut peak_kib = 0u64;
    let status = loop {
        peak_kib = peak_kib.max(tree_pss_kib(child.id()));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!(
            "{} failed (output in {})",
            util::describe(cmd),
            log.display()
        );
    }
    Ok((std::fs::read_to_string(log)?, peak_kib as f64 / 1024.0))
}

/// Proportional set size of `root` and every process under it, KiB (Linux /proc): a
/// sum of resident sizes would count each shared library once per process.
fn tree_pss_kib(root: u32) -> u64 {
    let mut parent = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let in_tree = |mut pid: u32| {
        while pid != root {
            match parent.get(&pid) {
                Some(&up) if up != 0 && up != pid => pid = up,
                _ => return false,
            }
        }
        true
    };
    parent
        .keys()
        .filter(|&&pid| in_tree(pid))
        .filter_map(|pid| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}
