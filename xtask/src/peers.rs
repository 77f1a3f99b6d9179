//! `cargo xtask bench peers`: tandem beside PyTorch and Flower on the same work, machine
//! and cores (issue 15): the split step, the federated simulation and the
//! device footprint ([`crate::peers_device`]), and with `--aarch64` the same tandem programs
//! counted on aarch64 ([`crate::peers_aarch64`]; a 10-minute cross build). The Python side
//! runs in a virtual environment outside the repository
//! (`$TANDEM_CACHE/peers-venv`, pinned versions, made on first use from PyPI); its
//! programs are in `bench/peers/`.
//!
//! Federated: `tandem-cloud simulate` against Flower's simulation runtime (Ray) with
//! PyTorch (`flower_fl.py`): LeNet-5, Fashion-MNIST split IID over 100 clients, FedAvg
//! with 10 per round, one local epoch of SGD (lr 0.05, momentum 0.9, batch 32), identity
//! updates, the global model tested on the 10,000 test images every round, 50 rounds,
//! both on the same two cores: seconds per round (median after the first), peak memory
//! of the whole simulation (PSS of every process of it, sampled), test accuracy, bytes per round.
//!
//! Split step: MiniLM cut after 2 layers, train-bottom, identity codec, the same 16
//! training reviews at every step (a corpus of just them, written by the Python peer, so
//! both sides see the same 420 real tokens in a 16 x 47 batch), both sides on the same
//! two cores. tandem's device step is its bottom's forward plus its backward and AdamW
//! (from its metrics), its cloud step the round trip to tandem-cloud (the top's forward,
//! backward and AdamW, plus loopback); PyTorch eager runs the same layers from the same
//! safetensors. Medians after 3 warm-up steps.

use crate::split::{self, CloudProcess, DEMO_NODE};
use crate::util;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python packages, pinned.
const PACKAGES: &[&str] = &[
    "torch==2.15.0",
    "flwr[simulation]==1.42.0",
    "numpy==2.3.5",
    "safetensors==0.7.0",
    "tokenizers==0.22.1",
];

/// The cores both sides run on.
pub(crate) const CORES: &str = "0,1";

/// Steps timed on each side, after [`WARMUP`].
const STEPS: usize = 20;
const WARMUP: usize = 3;

/// Runs the comparison and prints its table and last line.
pub fn bench(args: &[String]) -> Result<()> {
    let aarch64 = match args {
        [] => false,
        [flag] if flag == "--aarch64" => true,
        _ => bail!("usage: cargo xtask bench peers [--aarch64]"),
    };
    let python = venv()?;
    let bin = split::build_and_issue("release")?;
    let dir = util::target_dir().join("peers");
    std::fs::create_dir_all(&dir)?;
    let model = util::cache_dir().join("minilm");
    let data = util::cache_dir().join("data/rotten_tomatoes_corpus_full.csv.bz2");
    let script = util::workspace_root().join("bench/peers/split_step.py");
    let peer = |extra: &[&str]| {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", CORES])
            .arg(&python)
            .arg(&script)
            .arg("--model-dir")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args([
                "--steps",
                &STEPS.to_string(),
                "--warmup",
                &WARMUP.to_string(),
            ])
            .args(extra);
        cmd
    };
    let corpus = dir.join("split-batch.csv.bz2");
    util::run(&mut peer(&["--write-corpus", &corpus.to_string_lossy()]))?;
    eprintln!("peers: PyTorch eager split step");
    let torch = util::output(&mut peer(&[])).context("the PyTorch peer failed")?;
    let figure = |key: &str| -> Result<f64> {
        torch
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")?.parse().ok())
            .with_context(|| format!("the PyTorch peer printed no {key}"))
    };
    let (torch_bottom, torch_top) = (
        figure("torch_bottom_step_ms")?,
        figure("torch_top_step_ms")?,
    );
    eprintln!("peers: tandem split step");
    let tandem = tandem_split(&bin, &dir, &corpus)?;
    let fl = crate::peers_fl::compare(&python, &bin, &dir)?;
    eprintln!("peers: device footprint");
    let devices = crate::peers_device::compare(&python, &bin, &dir)?;
    let (device_ratio, cloud_ratio) = (tandem.device / torch_bottom, tandem.cloud / torch_top);
    let version = torch
        .lines()
        .find(|l| l.starts_with("torch: "))
        .unwrap_or("torch: ?");
    println!(
        "\n| split step, MiniLM cut 2, 16 reviews (420 real tokens), cores {CORES} | tandem ms | PyTorch eager ms ({}) | tandem / PyTorch |\n|---|---|---|---|",
        version.trim_start_matches("torch: ")
    );
    println!(
        "| device: bottom forward + backward + AdamW | {:.1} (forward {:.1}) | {torch_bottom:.1} | {device_ratio:.2}x |",
        tandem.device, tandem.forward
    );
    println!(
        "| cloud: top forward + backward + AdamW (tandem: round trip on loopback) | {:.1} | {torch_top:.1} | {cloud_ratio:.2}x |",
        tandem.cloud
    );
    fl.print();
    devices.print();
    if aarch64 {
        crate::peers_aarch64::count(&bin, &corpus)?.print(fl.tandem_round_s(), tandem.device);
    }
    println!(
        "peers_fl_round_speedup: {:.2} device_rss_ratio: {:.3} split_step_ratio: {:.2} (device {device_ratio:.2}, cloud {cloud_ratio:.2})",
        fl.speedup(),
        devices.rss_ratio(),
        device_ratio.max(cloud_ratio)
    );
    Ok(())
}

/// tandem's medians on the one-batch corpus.
struct TandemStep {
    /// Bottom forward + backward + AdamW, ms.
    device: f64,
    /// Its forward alone, ms.
    forward: f64,
    /// Round trip to the cloud (its top step and loopback), ms.
    cloud: f64,
}

/// `tandem split`'s arguments for this comparison: `steps` steps on `corpus` against the
/// cloud at `addr`, no evaluation on the way (also counted on aarch64,
/// [`crate::peers_aarch64`]).
pub(crate) fn split_args(addr: &str, corpus: &Path, steps: usize) -> Vec<String> {
    let mut args: Vec<String> = ["split", "--cloud", addr, "--node", DEMO_NODE, "--data"]
        .map(String::from)
        .to_vec();
    args.push(corpus.display().to_string());
    args.extend(
        [
            "--cut",
            "2",
            "--mode",
            "train-bottom",
            "--codec",
            "identity",
            "--batch-size",
            "16",
            "--max-len",
            "64",
            "--eval-every",
            "100000",
            "--dev-limit",
            "16",
            "--test-limit",
            "16",
            "--steps",
        ]
        .map(String::from),
    );
    args.push(steps.to_string());
    args
}

/// `tandem split` on `corpus` against a tandem-cloud, both on [`CORES`].
fn tandem_split(bin: &Path, dir: &Path, corpus: &Path) -> Result<TandemStep> {
    let mut cloud = CloudProcess::start(bin, &[])?;
    let pinned =
        util::run(Command::new("taskset").args(["-a", "-pc", CORES, &cloud.pid().to_string()]));
    let metrics = dir.join("tandem-split.json");
    let result = pinned.and_then(|()| {
        util::run(
            Command::new("taskset")
                .args(["-c", CORES])
                .arg(bin.join("tandem"))
                .args(split_args(&cloud.addr, corpus, STEPS + WARMUP))
                .arg("--metrics")
                .arg(&metrics)
                .arg("--plot")
                .arg(dir.join("tandem-split.png"))
                .arg("--checkpoint")
                .arg(dir.join("tandem-split.ckpt")),
        )
    });
    cloud.stop();
    result?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics)?)?;
    let steps = json["steps"].as_array().context("metrics without steps")?;
    let timed = steps
        .get(WARMUP..)
        .context("fewer steps than the warm-up")?;
    let median_of = |pick: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Result<f64> {
        let mut values = timed
            .iter()
            .map(|s| pick(s).context("a step without its times"))
            .collect::<Result<Vec<f64>>>()?;
        Ok(util::quantile(&mut values, 0.5))
    };
    Ok(TandemStep {
        device: median_of(&|s| Some(s["compute_ms"].as_f64()? + s["backward_ms"].as_f64()?))?,
        forward: median_of(&|s| s["compute_ms"].as_f64())?,
        cloud: median_of(&|s| s["round_trip_ms"].as_f64())?,
    })
}

/// The peers' Python, in a virtual environment made (and its packages installed) on
/// first use.
fn venv() -> Result<PathBuf> {
    let dir = util::cache_dir().join("peers-venv");
    let python = dir.join("bin/python");
    let marker = dir.join("tandem-packages.txt");
    let wanted = PACKAGES.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted) {
        return Ok(python);
    }
    eprintln!(
        "peers: Python environment in {} (PyPI: {})",
        dir.display(),
        PACKAGES.join(" ")
    );
    util::run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    util::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--progress-bar", "off"])
            .args(PACKAGES),
    )?;
    std::fs::write(&marker, wanted)?;
    Ok(python)
}
