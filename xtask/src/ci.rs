//! `cargo xtask ci`: the README's test command, and what `.ci/run` calls.

use crate::{cross, demo, setup, util};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// Test totals over every `cargo test` run of the pipeline.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

pub fn run() -> Result<()> {
    let started = std::time::Instant::now();
    setup::run(&setup::Options::all())?;
    let mut totals = Totals::default();

    step("format");
    util::run(util::cargo().args(["fmt", "--all", "--check"]))?;

    step("clippy");
    util::run(util::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("tests (x86_64)");
    run_tests(util::cargo().args(["test", "--workspace"]), &mut totals)?;

    step("fuzz targets: build, and 20000 random inputs each");
    crate::fuzz::build_and_smoke(20_000)?;

    step("tests (aarch64 under qemu: kernels, runtime without burn, loopback QUIC without burn)");
    for args in [
        &["test", "-p", "tandem-kernels"][..],
        &[
            "test",
            "-p",
            "tandem-runtime",
            "--no-default-features",
            "--lib",
        ],
        &["test", "-p", "tandem-tests", "--no-default-features"],
    ] {
        run_tests(&mut cross_cargo(args), &mut totals)?;
    }

    step("aarch64 release build of tandem (with burn)");
    let args: Vec<String> = [
        "build",
        "--release",
        "-p",
        "tandem-runtime",
        "--bin",
        "tandem",
    ]
    .map(String::from)
    .to_vec();
    cross::cargo(&args)?;
    check_aarch64_elf()?;

    step("instruction counting: qemu TCG plugin on the aarch64 tandem");
    let plugin = crate::insn::build_plugin()?;
    let tandem = util::target_dir()
        .join(cross::TARGET)
        .join("release/tandem");
    let counts = crate::insn::count(&plugin, &tandem, &["--version".to_string()])?;
    if counts.total == 0 {
        bail!("the instruction-count plugin counted nothing");
    }
    eprintln!(
        "tandem --version: {} instructions, {} SIMD",
        counts.total, counts.simd
    );

    step("demo: tandem-cloud + tandem hello on loopback");
    demo::hello_on_loopback()?;

    eprintln!(
        "ci: all steps passed in {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    // The plain closing line CI reads.
    println!(
        "ci: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

/// `cargo xtask aarch64 <args>` as a Command whose output we can scan.
fn cross_cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|_| "xtask".into()));
    cmd.arg("aarch64")
        .args(args)
        .current_dir(util::workspace_root());
    cmd
}

/// Runs a `cargo test` command, echoing its stdout and adding its "test result" lines
/// to `totals`.
fn run_tests(cmd: &mut Command, totals: &mut Totals) -> Result<()> {
    eprintln!("$ {}", util::describe(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("stdout not captured")?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        writeln!(out, "{line}")?;
        if let Some(result) = line.strip_prefix("test result: ") {
            add_result(result, totals);
        }
    }
    drop(out);
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed ({status})", util::describe(cmd));
    }
    Ok(())
}

/// Parses `ok. 6 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
fn add_result(result: &str, totals: &mut Totals) {
    for part in result.split([';', '.']) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(what)) = (words.next(), words.next())
            && let Ok(n) = n.parse::<u64>()
        {
            match what {
                "passed" => totals.passed += n,
                "failed" => totals.failed += n,
                "ignored" => totals.ignored += n,
                _ => {}
            }
        }
    }
}

/// The cross-built `tandem` must be an aarch64 ELF (e_machine 183); `file` confirms it.
fn check_aarch64_elf() -> Result<()> {
    let path = util::target_dir()
        .join(cross::TARGET)
        .join("release")
        .join("tandem");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_elf64 = bytes.len() > 20 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2;
    if !is_elf64 || u16::from_le_bytes([bytes[18], bytes[19]]) != 183 {
        bail!("{} is not an aarch64 ELF binary", path.display());
    }
    if let Some(described) = util::output(Command::new("file").arg(&path)) {
        eprint!("{described}");
    }
    eprintln!(
        "{}: aarch64 ELF, {:.1} MiB",
        path.display(),
        bytes.len() as f64 / (1 << 20) as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_test_result_lines() {
        let mut totals = Totals::default();
        add_result(
            "ok. 6 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.83s",
            &mut totals,
        );
        add_result(
            "FAILED. 13 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.36s",
            &mut totals,
        );
        assert_eq!((totals.passed, totals.failed, totals.ignored), (19, 1, 2));
    }
}
