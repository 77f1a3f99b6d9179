//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, on stable Rust.
//!
//! cargo-fuzz needs nightly only for sanitizers; coverage-guided fuzzing needs nothing but
//! LLVM's SanitizerCoverage passes, which stable rustc runs with the same flags cargo-fuzz
//! passes. So `cargo xtask fuzz <target>` builds an instrumented release binary (in its own
//! target subdirectory, so the flags never invalidate the normal build) and runs libFuzzer
//! with a corpus in `fuzz/corpus/<target>` and crashes in `fuzz/artifacts/<target>/`.
//! `cargo +nightly fuzz run <target>` works as well where cargo-fuzz is installed.

use crate::util;
use anyhow::{Result, bail};
use std::process::Command;

/// The targets in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 5] = [
    "frame_roundtrip",
    "split_ops",
    "round_ops",
    "codec_decode",
    "tensor_assembly",
];

/// The flags cargo-fuzz passes for coverage-guided fuzzing (no sanitizer).
const COVERAGE_FLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// cargo in `fuzz/` (its own workspace), building into the project's target directory
/// (where [`build_and_smoke`] looks for the binaries).
fn fuzz_cargo() -> Command {
    let mut cmd = util::cargo();
    cmd.current_dir(util::workspace_root().join("fuzz"))
        .env("CARGO_TARGET_DIR", util::target_dir());
    cmd
}

/// Builds every target without instrumentation (what CI checks) and runs each on
/// `runs` random inputs, so a target that panics on its own checks fails CI.
pub fn build_and_smoke(runs: u32) -> Result<()> {
    util::run(fuzz_cargo().args(["build", "--bins"]))?;
    for target in TARGETS {
        let binary = util::target_dir().join("debug").join(target);
        util::run(Command::new(binary).arg(format!("-runs={runs}")))?;
    }
    Ok(())
}

/// `cargo xtask fuzz <target> [seconds] [-- libfuzzer args]`.
pub fn run(args: &[String]) -> Result<()> {
    let (ours, theirs) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (args, &[][..]),
    };
    let Some(target) = ours.first() else {
        bail!(
            "usage: cargo xtask fuzz <target> [seconds] [-- libfuzzer args]\ntargets: {}",
            TARGETS.join(", ")
        );
    };
    if !TARGETS.contains(&target.as_str()) {
        bail!(
            "unknown fuzz target '{target}'; targets: {}",
            TARGETS.join(", ")
        );
    }
    let seconds: u64 = match ours.get(1) {
        Some(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("seconds must be a number, got '{s}'"))?,
        None => 60,
    };
    let target_dir = util::target_dir().join("fuzz-instrumented");
    // An explicit --target keeps RUSTFLAGS off build scripts (they cannot link the
    // coverage hooks), as cargo-fuzz does.
    let host = host_triple()?;
    util::run(
        fuzz_cargo()
            .args(["build", "--release", "--bin", target, "--target", &host])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", COVERAGE_FLAGS),
    )?;
    let fuzz_dir = util::workspace_root().join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let mut prefix = artifacts.into_os_string();
    prefix.push("/");
    let mut artifact_arg = std::ffi::OsString::from("-artifact_prefix=");
    artifact_arg.push(prefix);
    util::run(
        Command::new(target_dir.join(&host).join("release").join(target))
            .arg(format!("-max_total_time={seconds}"))
            .arg(artifact_arg)
            .args(theirs)
            .arg(&corpus),
    )
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let info = util::output(Command::new(rustc).arg("-vV"))
        .ok_or_else(|| anyhow::anyhow!("cannot run `rustc -vV`"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("`rustc -vV` names no host"))
}
