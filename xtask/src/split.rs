//! Split fine-tuning on loopback: `cargo xtask demo` (the README's main command) and
//! `cargo xtask bench split` (the Identity vs compressed comparison of BENCHMARKS.md).
//! Device and cloud run as separate release processes, so the device's peak RSS is its
//! own.

use crate::util;
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// The device name the demo and benchmark issue a certificate for.
pub const DEMO_NODE: &str = "demo-device";

/// Builds `tandem` and `tandem-cloud` (`profile`: "debug" or "release") and makes sure
/// the CA and the demo device's certificate exist; returns the binaries' directory.
pub fn build_and_issue(profile: &str) -> Result<PathBuf> {
    let mut build = vec![
        "build",
        "--quiet",
        "-p",
        "tandem-runtime",
        "-p",
        "tandem-cloud",
        "--bins",
    ];
    if profile == "release" {
        build.push("--release");
    }
    util::run(util::cargo().args(&build))?;
    let bin = util::target_dir().join(profile);
    issue_demo_certificate(&bin)?;
    Ok(bin)
}

/// Makes sure the CA and the demo device's certificate exist, with `bin`'s `tandem-cloud`.
pub fn issue_demo_certificate(bin: &Path) -> Result<()> {
    let pki = util::cache_dir().join("pki");
    if !pki.join("ca-cert.pem").exists() {
        util::run(Command::new(bin.join("tandem-cloud")).args(["ca", "init"]))?;
    }
    let device_cert = pki.join("devices").join(format!("{DEMO_NODE}-cert.pem"));
    if !device_cert.exists() {
        util::run(
            Command::new(bin.join("tandem-cloud")).args(["ca", "issue", "--node", DEMO_NODE]),
        )?;
    }
    Ok(())
}

/// A cloud process and the lines it prints.
pub struct CloudProcess {
    child: Child,
    lines: Receiver<String>,
    /// Where it listens.
    pub addr: String,
}

impl CloudProcess {
    /// Starts `tandem-cloud serve` on a free loopback port with `args`, echoing its
    /// output, and waits (30 s at most) for its address.
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(bin.join("tandem-cloud"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start tandem-cloud")?;
        let stdout = child
            .stdout
            .take()
            .context("tandem-cloud stdout not captured")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                let _ = tx.send(line);
            }
        });
        let mut cloud = Self {
            child,
            lines,
            addr: String::new(),
        };
        loop {
            let Ok(line) = cloud.lines.recv_timeout(Duration::from_secs(30)) else {
                cloud.stop();
                bail!("tandem-cloud exited, or did not report its address within 30 s (see above)");
            };
            if let Some(rest) = line.strip_prefix("tandem-cloud listening on ") {
                cloud.addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                return Ok(cloud);
            }
        }
    }

    /// SIGTERM (graceful close), then SIGKILL after 5 s; returns every line printed
    /// after the address.
    pub fn stop(&mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut stopped = false;
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            lines.push(line);
        }
        lines
    }
}

/// Cloud flags for `args`: the cloud's peak learning rate when `--cloud-lr` is among
/// them (the top's warm-up and length come from the device's Hello).
fn cloud_flags(args: &[String]) -> Vec<String> {
    util::flag(args, "--cloud-lr").map_or_else(Vec::new, |lr| vec!["--lr".into(), lr.into()])
}

/// Starts the cloud (with `--cloud-lr` from `args`), runs `tandem split` against it with
/// `own` flags then `args`' device flags, stops the cloud and returns its output lines.
fn run_split(bin: &Path, args: &[String], own: &[&OsStr]) -> Result<Vec<String>> {
    let flags = cloud_flags(args);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cloud = CloudProcess::start(bin, &flags)?;
    let result = util::run(
        Command::new(bin.join("tandem"))
            .args(["split", "--cloud", &cloud.addr, "--node", DEMO_NODE])
            .args(own)
            // --cloud-lr is the cloud's, not a `tandem split` flag.
            .args(util::without_flag(args, "--cloud-lr")),
    );
    let lines = cloud.stop();
    result.map(|()| lines)
}

/// The README's main command: split fine-tuning on loopback with the defaults (or
/// `extra` flags passed to `tandem split`).
pub fn demo(extra: &[String]) -> Result<()> {
    let bin = build_and_issue("release")?;
    run_split(&bin, extra, &[]).map(drop)
}

/// One benchmark run's numbers, read from its metrics file.
struct Measured {
    accuracy: f64,
    up_per_step: f64,
    down_per_step: f64,
    tensor_ratio: f64,
    compute_ms: f64,
    encode_ms: f64,
    round_trip_ms: f64,
    backward_ms: f64,
    cloud_ms: Option<f64>,
    peak_rss_mib: f64,
}

/// The metrics file of the bench's run with `codec`.
fn bench_metrics(codec: &str) -> PathBuf {
    util::target_dir().join(format!(
        "bench-split-{}.json",
        codec.replace([':', ',', '='], "_")
    ))
}

/// One run of the bench with `codec`, its plot drawn beside the runs of `compare_with`.
fn bench_run(bin: &Path, codec: &str, args: &[String], compare_with: &[&str]) -> Result<Measured> {
    let metrics = bench_metrics(codec);
    let plot = metrics.with_extension("png");
    let earlier: Vec<PathBuf> = compare_with.iter().map(|c| bench_metrics(c)).collect();
    let mut own: Vec<&OsStr> = vec![
        "--codec".as_ref(),
        codec.as_ref(),
        "--label".as_ref(),
        codec.as_ref(),
        "--metrics".as_ref(),
        metrics.as_os_str(),
        "--plot".as_ref(),
        plot.as_os_str(),
    ];
    for path in &earlier {
        own.extend(["--plot-with".as_ref(), path.as_os_str()]);
    }
    let lines = run_split(bin, args, &own)?;
    let cloud_ms = lines.iter().find_map(|l| {
        l.strip_prefix("cloud compute: ")?
            .split(", ")
            .nth(1)?
            .strip_suffix(" ms/step")?
            .parse()
            .ok()
    });
    let text =
        std::fs::read_to_string(&metrics).with_context(|| format!("{}", metrics.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let steps = json["steps"].as_array().context("metrics without steps")?;
    let mean = |key: &str| {
        steps.iter().filter_map(|s| s[key].as_f64()).sum::<f64>() / steps.len().max(1) as f64
    };
    Ok(Measured {
        accuracy: json["test"]["accuracy"]
            .as_f64()
            .context("no test accuracy")?,
        up_per_step: mean("up_bytes"),
        down_per_step: mean("down_bytes"),
        tensor_ratio: mean("ratio"),
        compute_ms: mean("compute_ms"),
        encode_ms: mean("encode_ms"),
        round_trip_ms: mean("round_trip_ms"),
        backward_ms: mean("backward_ms"),
        cloud_ms,
        peak_rss_mib: json["peak_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0,
    })
}

/// `cargo xtask bench split [CODEC] [--cloud-lr LR] [tandem split flags]`: the same run
/// with Identity and
/// with CODEC (default `sft:r=16,bits=8`); last line
/// `split_uplink_reduction: X accuracy_delta: Y`.
pub fn bench(args: &[String]) -> Result<()> {
    let (codec, rest) = match args.first() {
        Some(c) if !c.starts_with("--") => (c.as_str(), &args[1..]),
        _ => ("sft:r=16,bits=8", args),
    };
    let bin = build_and_issue("release")?;
    let baseline = bench_run(&bin, "identity", rest, &[])?;
    // Its plot draws both runs.
    let compressed = bench_run(&bin, codec, rest, &["identity"])?;
    println!();
    println!(
        "| codec | test acc | up B/step | down B/step | tensor ratio | device ms | encode ms | network+cloud ms | cloud ms | backward ms | device peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, m) in [("identity", &baseline), (codec, &compressed)] {
        println!(
            "| {name} | {:.2}% | {:.0} | {:.0} | {:.1}x | {:.1} | {:.2} | {:.1} | {} | {:.1} | {:.0} |",
            m.accuracy * 100.0,
            m.up_per_step,
            m.down_per_step,
            m.tensor_ratio,
            m.compute_ms,
            m.encode_ms,
            m.round_trip_ms,
            m.cloud_ms.map_or("-".into(), |c| format!("{c:.1}")),
            m.backward_ms,
            m.peak_rss_mib,
        );
    }
    println!(
        "split_uplink_reduction: {:.1} accuracy_delta: {:+.2}",
        baseline.up_per_step / compressed.up_per_step,
        (compressed.accuracy - baseline.accuracy) * 100.0
    );
    Ok(())
}
