//! Split fine-tuning on loopback: `cargo xtask demo` (the README's main command), and
//! the processes `cargo xtask bench split` (`split_bench`) runs.
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
/// With `TANDEM_BIN_DIR` set, its binaries are used as they are and nothing is built (a
/// long bench keeps the binaries it started with while the tree changes).
pub fn build_and_issue(profile: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TANDEM_BIN_DIR").filter(|d| !d.is_empty()) {
        let bin = PathBuf::from(dir);
        for name in ["tandem", "tandem-cloud"] {
            if !bin.join(name).is_file() {
                bail!("TANDEM_BIN_DIR={} has no `{name}` binary", bin.display());
            }
        }
        issue_demo_certificate(&bin)?;
        return Ok(bin);
    }
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
        Self::start_at(bin, "127.0.0.1:0", args)
    }

    /// [`Self::start`] listening on `listen` (a restarted cloud keeps its address).
    pub fn start_at(bin: &Path, listen: &str, args: &[&str]) -> Result<Self> {
        Self::start_logging(bin, listen, args, Stdio::inherit())
    }

    /// [`Self::start_at`] with its log (stderr) going to `log`.
    pub fn start_logging(bin: &Path, listen: &str, args: &[&str], log: Stdio) -> Result<Self> {
        let mut child = Command::new(bin.join("tandem-cloud"))
            .args(["serve", "--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether a line it printed since the last call matches `wanted` (reads without
    /// waiting).
    pub fn printed(&mut self, wanted: impl Fn(&str) -> bool) -> bool {
        self.lines.try_iter().any(|line| wanted(&line))
    }

    /// Its peak resident set so far (Linux `VmHWM`), in MiB; `None` where unknown.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// SIGKILL at once (a crash), and waits for the process to end.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("cannot kill tandem-cloud")?;
        self.child.wait().context("tandem-cloud did not end")?;
        Ok(())
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
pub fn run_split(bin: &Path, args: &[String], own: &[&OsStr]) -> Result<Vec<String>> {
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
