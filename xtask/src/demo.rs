//! `cargo xtask demo`: the README's main command, split fine-tuning of MiniLM on
//! loopback (see [`crate::split`]); CI runs the quick Hello check instead.

use crate::split::{self, CloudProcess, DEMO_NODE};
use crate::{setup, util};
use anyhow::Result;
use std::process::Command;

/// Set-up (model, data, certificates), then the split demo with `extra` flags.
pub fn run(extra: &[String]) -> Result<()> {
    setup::run(&setup::Options::all())?;
    split::demo(extra)
}

/// Builds both binaries (debug), starts the cloud on a free loopback port, says hello,
/// stops it.
pub fn hello_on_loopback() -> Result<()> {
    let bin = split::build_and_issue("debug")?;
    let mut cloud = CloudProcess::start(&bin, &["--app", "hello"])?;
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
