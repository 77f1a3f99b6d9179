//! `cargo xtask demo`: the README's main command. Today it starts `tandem-cloud` on
//! loopback and runs `tandem hello` against it; it becomes the split fine-tuning demo.

use crate::{setup, util};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn run() -> Result<()> {
    setup::run(&setup::Options::all())?;
    hello_on_loopback()
}

/// The device name the demo issues a certificate for.
const DEMO_NODE: &str = "demo-device";

/// Builds both binaries, makes sure the CA and a device certificate exist (in the tandem
/// cache), starts the cloud on a free loopback port, says hello, stops it.
pub fn hello_on_loopback() -> Result<()> {
    let build = [
        "build",
        "--quiet",
        "-p",
        "tandem-runtime",
        "-p",
        "tandem-cloud",
        "--bins",
    ];
    util::run(util::cargo().args(build))?;
    let bin = util::target_dir().join("debug");
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
    let mut cloud = Command::new(bin.join("tandem-cloud"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start tandem-cloud")?;
    let result = wait_for_address(&mut cloud).and_then(|addr| {
        util::run(
            Command::new(bin.join("tandem")).args(["hello", "--cloud", &addr, "--node", DEMO_NODE]),
        )
    });
    stop(&mut cloud);
    result
}

/// Reads the cloud's "listening on ADDR" line (30 s at most) and returns ADDR.
fn wait_for_address(cloud: &mut Child) -> Result<String> {
    let stdout = cloud
        .stdout
        .take()
        .context("tandem-cloud stdout not captured")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            let _ = tx.send(line);
        }
    });
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => bail!("tandem-cloud did not report its address within 30 s"),
        };
        if let Some(rest) = line.strip_prefix("tandem-cloud listening on ") {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            return Ok(addr.to_string());
        }
    }
}

/// SIGTERM (graceful close), then SIGKILL if it is still running after 5 s.
fn stop(cloud: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &cloud.id().to_string()])
        .status();
    for _ in 0..50 {
        if let Ok(Some(_)) = cloud.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = cloud.kill();
    let _ = cloud.wait();
}
