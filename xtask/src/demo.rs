//! `cargo xtask demo`: the README's main command, split fine-tuning of MiniLM on
//! loopback (see [`crate::split`]), and `cargo xtask demo fl`, federated learning on
//! loopback (see [`crate::fl`]); CI runs the quick Hello check instead.

use crate::split::{self, CloudProcess, DEMO_NODE};
use crate::{setup, util};
use anyhow::Result;
use std::path::Path;
use std::process::Command;

/// Set-up (model, data, certificates), then the split demo with `extra` flags.
pub fn run(extra: &[String]) -> Result<()> {
    setup::run(&setup::Options::all())?;
    match extra.split_first() {
        Some((first, rest)) if first == "fl" => crate::fl::demo(rest),
        _ => split::demo(extra),
    }
}

/// Starts the cloud from `bin` (a directory holding `tandem` and `tandem-cloud`, already
/// built) on a free loopback port, says hello, stops it.
pub fn hello_on_loopback(bin: &Path) -> Result<()> {
    split::issue_demo_certificate(bin)?;
    let mut cloud = CloudProcess::start(bin, &["--app", "hello"])?;
    let result = util::run(Command::new(bin.join("tandem")).args([
        "hello",
        "--cloud",
        &cloud.addr,
        "--node",
        DEMO_NODE,
    ]));
    cloud.stop();
    result
}
