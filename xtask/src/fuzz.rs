//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, on stable Rust.
//!
//! cargo-fuzz needs nightly only for sanitizers; coverage-guided fuzzing needs nothing but
//! LLVM's SanitizerCoverage passes, which stable rustc runs with the same flags cargo-fuzz
//! passes. So `cargo xtask fuzz <target>` builds an instrumented release binary (in its own
//! target subdirectory, so the flags never invalidate the normal build) and runs libFuzzer
//! with a corpus in `fuzz/corpus/<target>` and crashes in `fuzz/artifacts/<target>/`.
//! `cargo +nightly fuzz run <target>` works as well where cargo-fuzz is installed.

use crate::util;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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

/// `cargo xtask fuzz <target|all> [seconds] [-- libfuzzer args]`: one target, or every
/// target in turn (before a release: `all 600`, ten minutes each), ending with a table of
/// executions and crashes and `fuzz: targets N executions E crashes C`.
pub fn run(args: &[String]) -> Result<()> {
    let (ours, theirs) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (args, &[][..]),
    };
    let Some(target) = ours.first() else {
        bail!(
            "usage: cargo xtask fuzz <target|all> [seconds] [-- libfuzzer args]\ntargets: {}",
            TARGETS.join(", ")
        );
    };
    let targets: Vec<&str> = if target == "all" {
        TARGETS.to_vec()
    } else if TARGETS.contains(&target.as_str()) {
        vec![target.as_str()]
    } else {
        bail!(
            "unknown fuzz target '{target}'; targets: {} (or all)",
            TARGETS.join(", ")
        );
    };
    let seconds: u64 = match ours.get(1) {
        Some(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("seconds must be a number, got '{s}'"))?,
        None => 60,
    };
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push((*target, fuzz_target(target, seconds, theirs)?));
    }
    eprintln!("\n| target | seconds | executions | crashes |\n|---|---|---|---|");
    for (target, outcome) in &outcomes {
        eprintln!(
            "| {target} | {seconds} | {} | {} |",
            outcome.executions,
            u8::from(outcome.crashed)
        );
    }
    let executions: u64 = outcomes.iter().map(|(_, o)| o.executions).sum();
    let crashes = outcomes.iter().filter(|(_, o)| o.crashed).count();
    println!(
        "fuzz: targets {} executions {executions} crashes {crashes}",
        outcomes.len()
    );
    if crashes > 0 {
        bail!("{crashes} target(s) crashed: the inputs are in fuzz/artifacts/<target>/");
    }
    Ok(())
}

/// What one target's run did.
struct Outcome {
    /// Inputs executed (libFuzzer's closing count).
    executions: u64,
    /// Whether it stopped on a crash (the input is in its artifacts directory).
    crashed: bool,
}

/// Builds `target` with coverage instrumentation and runs it for `seconds` on its corpus.
fn fuzz_target(target: &str, seconds: u64, libfuzzer_args: &[String]) -> Result<Outcome> {
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
    let mut cmd = Command::new(target_dir.join(&host).join("release").join(target));
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg(artifact_arg)
        .args(libfuzzer_args)
        .arg(&corpus)
        .stderr(Stdio::piped());
    eprintln!("$ {}", util::describe(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start fuzz target {target}"))?;
    let stderr = child.stderr.take().context("stderr not captured")?;
    let mut executions = 0;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        eprintln!("{line}");
        if let Some(n) = executions_in(&line) {
            executions = n;
        }
    }
    let crashed = !child.wait()?.success();
    Ok(Outcome {
        executions,
        crashed,
    })
}

/// The executions libFuzzer reports in a status line (`#12345\tpulse ...`, `#12345\tDONE
/// ...`, `Done 12345 runs in 600 second(s)`).
fn executions_in(line: &str) -> Option<u64> {
    if let Some(rest) = line.strip_prefix("Done ") {
        return rest.split_whitespace().next()?.parse().ok();
    }
    line.strip_prefix('#')?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
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

#[cfg(test)]
mod tests {
    use super::executions_in;

    #[test]
    fn reads_libfuzzer_execution_counts() {
        assert_eq!(
            executions_in("#1048576\tpulse  cov: 612 ft: 1874 corp: 210/9Kb exec/s: 349525"),
            Some(1_048_576)
        );
        assert_eq!(
            executions_in("#9821077\tDONE   cov: 640 ft: 2011 corp: 240/11Kb"),
            Some(9_821_077)
        );
        assert_eq!(
            executions_in("Done 9821077 runs in 601 second(s)"),
            Some(9_821_077)
        );
        assert_eq!(executions_in("INFO: Seed: 3607279170"), None);
        assert_eq!(
            executions_in("==1234== ERROR: libFuzzer: deadly signal"),
            None
        );
    }
}
