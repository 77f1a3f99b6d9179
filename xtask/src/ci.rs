//! `cargo xtask ci`: the README's test command, and what `.ci/run` calls.

use crate::{cross, demo, setup, util};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Test totals over every `cargo test` run of the pipeline.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Tests that returned early for want of the set-up's model or data: libtest
    /// counted them as passed; the closing line counts them as skipped.
    missing_cache: u64,
}

impl Totals {
    /// Moves `n` tests that noted a skip from passed to skipped.
    fn skipped_for_cache(&mut self, n: u64) {
        let n = n.min(self.passed);
        self.passed -= n;
        self.missing_cache += n;
    }
}

/// The variable naming the file where a test notes that it skipped for want of the
/// cached model or data (`tandem_runtime::paths::SKIP_LOG_ENV`).
const SKIP_LOG_ENV: &str = "TANDEM_SKIP_LOG";

/// Disk a cold CI run fills in its target directory, with room to spare: 2.4 GiB of x86_64
/// builds, about 2 GiB of aarch64 and fuzz builds (measured 2026-11-30). A full disk
/// otherwise shows as the linker dying of SIGBUS a quarter of an hour in.
const CI_DISK_GIB: u64 = 8;

/// The aarch64 binary CI links and counts, from [`CROSS_PROFILE`].
const CROSS_PROFILE: &str = "ci-cross";

pub fn run() -> Result<()> {
    let mut clock = StepClock::new();
    let result = steps(&mut clock);
    clock.report();
    result
}

/// Every check, in order; each crate is compiled once per target and profile
/// (README "CI" lists what each step costs on a cold target directory).
fn steps(clock: &mut StepClock) -> Result<()> {
    clock.step("set-up", || setup::run(&setup::Options::all()))?;
    clock.step("free disk for the builds", || {
        util::require_free_disk(&util::target_dir(), CI_DISK_GIB)
    })?;
    let mut totals = Totals::default();

    clock.step("format", || {
        util::run(util::cargo().args(["fmt", "--all", "--check"]))
    })?;

    let linted = Linted::new()?;
    clock.step(
        "x86_64 build of every target, workspace crates linted by clippy (-D warnings)",
        || {
            util::run(
                linted
                    .cargo()
                    .args(["test", "--workspace", "--all-targets", "--no-run"]),
            )
        },
    )?;

    clock.step("tests (x86_64)", || {
        run_tests(linted.cargo().args(["test", "--workspace"]), &mut totals)
    })?;

    clock.step(
        "GPU path compiles: tandem-cloud with the vulkan feature (cargo check, no GPU)",
        || {
            util::run(linted.cargo().args([
                "check",
                "-p",
                "tandem-cloud",
                "--features",
                "vulkan",
                "--bins",
            ]))
        },
    )?;

    clock.step(
        "demo: tandem-cloud + tandem hello on loopback (the test build's binaries)",
        || demo::hello_on_loopback(&util::target_dir().join("debug")),
    )?;

    clock.step("fuzz targets: build, and 20000 random inputs each", || {
        crate::fuzz::build_and_smoke(20_000)
    })?;

    clock.step(
        "tests (aarch64 under qemu: kernels, runtime without burn, loopback QUIC without burn)",
        || {
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
            Ok(())
        },
    )?;

    let tandem = util::target_dir()
        .join(cross::TARGET)
        .join(CROSS_PROFILE)
        .join("tandem");
    clock.step(
        "aarch64 build of tandem, burn included (profile ci-cross: links, unoptimised)",
        || {
            let args = [
                "build",
                "--profile",
                CROSS_PROFILE,
                "-p",
                "tandem-runtime",
                "--bin",
                "tandem",
            ];
            cross::cargo(&args.map(String::from))?;
            check_aarch64_elf(&tandem)
        },
    )?;

    clock.step(
        "instruction counting: qemu TCG plugin on the aarch64 tandem",
        || {
            let plugin = crate::insn::build_plugin()?;
            let counts = crate::insn::count(&plugin, &tandem, &["--version".to_string()], &[])?;
            if counts.total == 0 {
                bail!("the instruction-count plugin counted nothing");
            }
            eprintln!(
                "tandem --version: {} instructions, {} SIMD",
                counts.total, counts.simd
            );
            Ok(())
        },
    )?;

    if totals.missing_cache > 0 {
        eprintln!(
            "ci: {} tests skipped without the set-up's model or data: run `cargo xtask setup`",
            totals.missing_cache
        );
    }
    // The plain closing line CI reads.
    println!(
        "ci: {} passed, {} failed, {} skipped",
        totals.passed,
        totals.failed,
        totals.ignored + totals.missing_cache
    );
    Ok(())
}

/// Wall time of each step, printed as the steps end and as a table at the end.
struct StepClock {
    started: Instant,
    done: Vec<(&'static str, Duration, bool)>,
}

impl StepClock {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs one step, announcing it and recording how long it took.
    fn step(&mut self, name: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        eprintln!("\n==> {name}");
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        eprintln!("<== {name}: {}", minutes(took));
        self.done.push((name, took, result.is_ok()));
        result
    }

    fn report(&self) {
        eprintln!("\nci: step times");
        for (name, took, ok) in &self.done {
            let mark = if *ok { "" } else { "  FAILED" };
            eprintln!("  {:>9}  {name}{mark}", minutes(*took));
        }
        eprintln!("  {:>9}  in all", minutes(self.started.elapsed()));
    }
}

fn minutes(d: Duration) -> String {
    format!("{:.1} min", d.as_secs_f64() / 60.0)
}

/// cargo whose workspace crates are compiled by clippy-driver, so one build serves both
/// clippy's lints (warnings denied) and the tests.
///
/// This is how `cargo clippy` works (the same two variables, then `cargo check`), minus
/// the check-only build of every dependency, burn included, that `cargo check` adds beside
/// the test build: dependencies are compiled once, by rustc, with codegen. The test step
/// must use the same variables, or cargo would recompile the workspace crates without
/// the wrapper.
struct Linted {
    driver: PathBuf,
}

impl Linted {
    fn new() -> Result<Self> {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let sysroot = util::output(Command::new(rustc).args(["--print", "sysroot"]))
            .context("cannot run `rustc --print sysroot`")?;
        let driver = Path::new(sysroot.trim()).join("bin").join("clippy-driver");
        if !driver.exists() {
            bail!(
                "clippy is not installed ({} is missing): run `rustup component add clippy`",
                driver.display()
            );
        }
        Ok(Self { driver })
    }

    fn cargo(&self) -> Command {
        let mut cmd = util::cargo();
        cmd.env("RUSTC_WORKSPACE_WRAPPER", &self.driver)
            // clippy-driver's argument list, each followed by its separator.
            .env(
                "CLIPPY_ARGS",
                "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
            );
        cmd
    }
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
/// to `totals`, with the tests that noted a skip in the skip log counted as skipped.
fn run_tests(cmd: &mut Command, totals: &mut Totals) -> Result<()> {
    let log = util::target_dir().join("ci-skipped-tests.log");
    if log.exists() {
        std::fs::remove_file(&log).with_context(|| format!("cannot remove {}", log.display()))?;
    }
    cmd.env(SKIP_LOG_ENV, &log);
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
    match std::fs::read_to_string(&log) {
        Ok(text) => totals.skipped_for_cache(skipped_tests(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => bail!("cannot read {}: {err}", log.display()),
    }
    Ok(())
}

/// Tests in a skip log (`binary \t test \t what was missing` per line), each counted
/// once however many files it found missing.
fn skipped_tests(log: &str) -> u64 {
    let tests: std::collections::HashSet<(&str, &str)> = log
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            Some((fields.next()?, fields.next()?))
        })
        .collect();
    tests.len() as u64
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

/// The cross-built `tandem` at `path` must be an aarch64 ELF (e_machine 183); `file`
/// confirms it.
fn check_aarch64_elf(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_elf64 = bytes.len() > 20 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2;
    if !is_elf64 || u16::from_le_bytes([bytes[18], bytes[19]]) != 183 {
        bail!("{} is not an aarch64 ELF binary", path.display());
    }
    if let Some(described) = util::output(Command::new("file").arg(path)) {
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

    #[test]
    fn a_test_noting_skips_counts_once_and_not_as_passed() {
        let log = "model-1\tsplit::learns\tno model\n\
                   model-1\tsplit::learns\tno data\n\
                   model-2\tsplit::learns\tno model\n\
                   fl-3\tfl::rounds\tno fashion-mnist\n";
        assert_eq!(skipped_tests(log), 3);
        let mut totals = Totals {
            passed: 10,
            ..Totals::default()
        };
        totals.skipped_for_cache(skipped_tests(log));
        assert_eq!((totals.passed, totals.missing_cache), (7, 3));
    }
}
