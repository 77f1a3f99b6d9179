//! `cargo xtask bench sort-mca`: llvm-mca's model estimate of the in-register sort kernel
//! (64 keys) on aarch64 cores. A model estimate, not a measurement.

use crate::{cross, util};
use anyhow::{Context, Result, bail};
use std::process::Command;

/// Debian 12's llvm-mca 14 models Neoverse N1 with the Cortex-A57 tables; llvm 19 has
/// real N1 and V1 models.
const LLVM_MCA: &str = "llvm-mca-19";
const SYMBOL: &str = "4arch7aarch644sort10sort64_i32";

pub fn sort_mca() -> Result<()> {
    let args: Vec<String> = [
        "rustc",
        "--quiet",
        "--release",
        "-p",
        "tandem-kernels",
        "--lib",
        "--",
        "--emit",
        "asm",
        "-C",
        "codegen-units=1",
    ]
    .map(String::from)
    .to_vec();
    cross::cargo(&args)?;
    let deps = util::target_dir().join(cross::TARGET).join("release/deps");
    let asm_file = std::fs::read_dir(&deps)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "s")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tandem_kernels-"))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("no tandem_kernels-*.s emitted")?;
    let asm = std::fs::read_to_string(&asm_file)?;
    let body = function_body(&asm, SYMBOL).context("sort64_i32 not found in the assembly")?;
    let kernel = std::env::temp_dir().join("tandem-sort64.s");
    std::fs::write(&kernel, &body)?;
    println!(
        "in-register sort of 64 i32 keys (NEON), {} instructions",
        body.lines().count()
    );
    println!(
        "{:<14} {:>16} {:>8}",
        "llvm-mca -mcpu", "cycles / 64 keys", "IPC"
    );
    let mut n1 = None;
    for cpu in ["neoverse-n1", "cortex-a72", "neoverse-v1"] {
        let out = Command::new(LLVM_MCA)
            .args([
                "-mtriple=aarch64",
                &format!("-mcpu={cpu}"),
                "-iterations=100",
            ])
            .arg(&kernel)
            .output()
            .with_context(|| format!("cannot run {LLVM_MCA} (run `cargo xtask setup`)"))?;
        if !out.status.success() {
            bail!(
                "{LLVM_MCA} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| -> Option<f64> {
            report
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let cycles = field("Total Cycles:").context("no Total Cycles in llvm-mca output")? / 100.0;
        let ipc = field("IPC:").unwrap_or(f64::NAN);
        println!("{cpu:<14} {cycles:>16.1} {ipc:>8.2}");
        if cpu == "neoverse-n1" {
            n1 = Some(cycles);
        }
    }
    println!(
        "sort64_neoverse_n1_cycles_per_64_keys: {:.1}",
        n1.unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The instructions of the function whose mangled name contains `symbol`: from its
/// label to `.Lfunc_end`, without directives, labels, comments or the final `ret`.
fn function_body(asm: &str, symbol: &str) -> Option<String> {
    let mut lines = asm
        .lines()
        .skip_while(|l| !(l.contains(symbol) && l.ends_with(':') && !l.starts_with('\t')));
    lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| !l.starts_with(".Lfunc_end"))
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with('.') || t.starts_with("//") || t.is_empty() || t == "ret")
        })
        .collect();
    (!body.is_empty()).then(|| body.join("\n") + "\n")
}
