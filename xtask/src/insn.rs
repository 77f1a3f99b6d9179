//! Instruction counting under qemu with the TCG plugin in `xtask/insn-count-plugin`.
//!
//! Counts are of dynamically executed guest instructions: repeatable and independent of
//! the host's load, unlike any wall time taken under qemu (which means nothing for NEON).

use crate::{cross, util};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Executed-instruction totals of one run.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub total: u64,
    pub simd: u64,
}

/// Builds the plugin (host, release) and returns the path of its shared object.
pub fn build_plugin() -> Result<PathBuf> {
    let manifest = util::workspace_root().join("xtask/insn-count-plugin/Cargo.toml");
    let target = util::target_dir().join("insn-plugin");
    util::run(
        util::cargo()
            .args(["build", "--quiet", "--release", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target),
    )?;
    Ok(target.join("release/libtandem_insn_count_plugin.so"))
}

/// Runs `program args` under qemu-aarch64 with the plugin; returns its counts.
pub fn count(
    plugin: &std::path::Path,
    program: &std::path::Path,
    args: &[String],
) -> Result<Counts> {
    let out = Command::new("qemu-aarch64")
        .arg("-plugin")
        .arg(plugin)
        .arg(program)
        .args(args)
        .output()
        .context("cannot run qemu-aarch64 (run `cargo xtask setup`)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{} failed under qemu ({}): {stderr}",
            program.display(),
            out.status
        );
    }
    parse(&stderr).with_context(|| format!("no insn-count line in qemu's output: {stderr}"))
}

fn parse(stderr: &str) -> Option<Counts> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("insn-count: "))?;
    let mut words = line.split_whitespace();
    let mut field = |name: &str| -> Option<u64> {
        (words.next()? == name).then_some(())?;
        words.next()?.parse().ok()
    };
    Some(Counts {
        total: field("total")?,
        simd: field("simd")?,
    })
}

/// `cargo xtask insn-count -- <aarch64 binary> [args]`.
pub fn run(args: &[String]) -> Result<()> {
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    let Some((program, rest)) = args.split_first() else {
        bail!("usage: cargo xtask insn-count -- <aarch64 binary> [args]");
    };
    let plugin = build_plugin()?;
    let counts = count(&plugin, program.as_ref(), rest)?;
    println!(
        "instructions executed: {} total, {} SIMD",
        counts.total, counts.simd
    );
    Ok(())
}

/// `cargo xtask bench sort-insns`: instructions per key of `sort_f32` (NEON) and of
/// `sort_unstable_by(f32::total_cmp)`, both built for aarch64, at 1M keys.
pub fn sort_insns() -> Result<()> {
    let args: Vec<String> = [
        "build",
        "--quiet",
        "--release",
        "-p",
        "tandem-kernels",
        "--example",
        "sort_work",
    ]
    .map(String::from)
    .to_vec();
    cross::cargo(&args)?;
    let program = util::target_dir()
        .join(cross::TARGET)
        .join("release/examples/sort_work");
    let plugin = build_plugin()?;
    let n: u64 = 1 << 20;
    let run = |method: &str| count(&plugin, &program, &[method.to_string(), n.to_string()]);
    let base = run("none")?;
    println!(
        "{:<28} {:>14} {:>10} {:>14}",
        "sort of 1M f32 (aarch64)", "insns/key", "SIMD/key", "SIMD share"
    );
    let mut per_key = Vec::new();
    for (label, method) in [
        ("tandem sort_f32 (NEON)", "tandem"),
        ("sort_unstable_by(total_cmp)", "std"),
    ] {
        let c = run(method)?;
        let total = c.total.saturating_sub(base.total) as f64 / n as f64;
        let simd = c.simd.saturating_sub(base.simd) as f64 / n as f64;
        println!(
            "{label:<28} {total:>14.1} {simd:>10.1} {:>13.0}%",
            100.0 * simd / total
        );
        per_key.push(total);
    }
    println!(
        "sort_f32_1M_insns_std_over_neon: {:.2}",
        per_key[1] / per_key[0]
    );
    Ok(())
}

/// The plugin's instruction classifier, tested here because the plugin's own test binary
/// cannot link outside qemu.
#[cfg(test)]
#[path = "../insn-count-plugin/src/classify.rs"]
mod classify;

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_plugin_line() {
        let c = super::parse("hello\ninsn-count: total 437955 simd 7058\n").unwrap();
        assert_eq!((c.total, c.simd), (437955, 7058));
        assert!(super::parse("insn-count: total x simd 1").is_none());
    }
}
