//! llvm-mca's model estimates of NEON kernels on aarch64 cores (estimates, not
//! measurements): `cargo xtask bench sort-mca` (the in-register sort of 64 keys and the
//! merge's 16 + 16 step) and
//! `cargo xtask bench lowrank-mca` (the GEMM micro-kernels' inner loops).

use crate::{cross, util};
use anyhow::{Context, Result, bail};
use std::process::Command;

/// Debian 12's llvm-mca 14 models Neoverse N1 with the Cortex-A57 tables; llvm 19 has
/// real N1 and V1 models.
const LLVM_MCA: &str = "llvm-mca-19";
const SYMBOL: &str = "4arch7aarch644sort10sort64_i32";
const MERGE_SYMBOL: &str = "4arch7aarch644sort9merge_i32";
/// The cores the sort kernels are modelled on.
const CPUS: [&str; 3] = ["neoverse-n1", "cortex-a72", "neoverse-v1"];

pub fn sort_mca() -> Result<()> {
    let asm = emit_kernels_asm()?;
    let body = function_body(&asm, SYMBOL).context("sort64_i32 not found in the assembly")?;
    println!(
        "in-register sort of 64 i32 keys (NEON), {} instructions",
        body.lines().count()
    );
    println!(
        "{:<14} {:>16} {:>8}",
        "llvm-mca -mcpu", "cycles / 64 keys", "IPC"
    );
    let mut n1 = None;
    for cpu in CPUS {
        let (cycles, ipc) = mca(&body, cpu, "tandem-sort64.s")?;
        println!("{cpu:<14} {cycles:>16.1} {ipc:>8.2}");
        if cpu == "neoverse-n1" {
            n1 = Some(cycles);
        }
    }
    // The merge: its loop of one 16 + 16 step (16 keys out), the loop with the most
    // `smin` in `merge_i32`.
    let merge_loop = function_body(&asm, MERGE_SYMBOL)
        .and_then(|body| hot_loop(&body, "smin"))
        .map(|(_, code)| code)
        .context("no merge loop in merge_i32")?;
    println!(
        "merge step, 16 + 16 keys (NEON), {} instructions",
        merge_loop.lines().count()
    );
    println!(
        "{:<14} {:>16} {:>18}",
        "llvm-mca -mcpu", "cycles / step", "cycles / key, pass"
    );
    for cpu in CPUS {
        let (cycles, _) = mca(&merge_loop, cpu, "tandem-merge-step.s")?;
        println!("{cpu:<14} {cycles:>16.1} {:>18.2}", cycles / 16.0);
    }
    println!(
        "sort64_neoverse_n1_cycles_per_64_keys: {:.1}",
        n1.unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The low-rank GEMM kernels: (label, the function the NEON loop is compiled into).
const GEMM_KERNELS: &[(&str, &str)] = &[
    ("X * Q", "6linalg13matmul_packed"),
    ("X^T * P", "6linalg10matmul_xtp17h"),
];

/// `cargo xtask bench lowrank-mca`: llvm-mca's estimate of the NEON GEMM micro-kernels'
/// inner loops (the innermost loop with the most `fmla` of each product), as FMA
/// instructions per cycle against the two 128-bit FMA pipes of the modelled core.
pub fn lowrank_mca() -> Result<()> {
    let asm = emit_kernels_asm()?;
    println!(
        "{:<9} {:<14} {:>6} {:>6} {:>12} {:>10} {:>9}",
        "kernel", "llvm-mca -mcpu", "insns", "fmla", "cycles/iter", "fmla/cycle", "of peak"
    );
    let mut worst_n1 = f64::INFINITY;
    for (label, function) in GEMM_KERNELS {
        let (fmla, hot) = function_body(&asm, function)
            .and_then(|body| hot_loop(&body, "fmla"))
            .with_context(|| format!("no fmla loop in {function}"))?;
        // 128-bit FMA pipes: N1 has 2, V1 4; the A72's peak is left out (no figure
        // here we could cite).
        for (cpu, fma_pipes) in [
            ("neoverse-n1", Some(2.0)),
            ("neoverse-v1", Some(4.0)),
            ("cortex-a72", None),
        ] {
            let (cycles, _) = mca(&hot, cpu, "tandem-gemm-loop.s")?;
            let per_cycle = fmla as f64 / cycles;
            let of_peak = fma_pipes.map_or("-".to_string(), |p: f64| {
                format!("{:.0}%", 100.0 * per_cycle / p)
            });
            println!(
                "{label:<9} {cpu:<14} {:>6} {fmla:>6} {cycles:>12.2} {per_cycle:>10.2} {of_peak:>9}",
                hot.lines().count(),
            );
            if let (Some(pipes), "neoverse-n1") = (fma_pipes, cpu) {
                worst_n1 = worst_n1.min(per_cycle / pipes);
            }
        }
    }
    println!("lowrank_gemm_neoverse_n1_fma_peak_fraction: {worst_n1:.2}");
    Ok(())
}

/// Cross-compiles tandem-kernels for aarch64 (release, one codegen unit) and returns
/// the emitted assembly.
fn emit_kernels_asm() -> Result<String> {
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
    Ok(std::fs::read_to_string(&asm_file)?)
}

/// Runs llvm-mca (100 iterations) on `code` for `cpu`; returns (cycles per iteration,
/// IPC).
fn mca(code: &str, cpu: &str, file_name: &str) -> Result<(f64, f64)> {
    let file = std::env::temp_dir().join(file_name);
    std::fs::write(&file, code)?;
    let out = Command::new(LLVM_MCA)
        .args([
            "-mtriple=aarch64",
            &format!("-mcpu={cpu}"),
            "-iterations=100",
        ])
        .arg(&file)
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
    Ok((cycles, field("IPC:").unwrap_or(f64::NAN)))
}

/// The innermost loop of `body` (a function's instructions with its labels kept) with
/// the most `opcode` instructions (returned with its count), the shortest of those on a
/// tie: the instructions from a label to the last branch back to it, labels and the
/// branch itself dropped (llvm-mca models straight-line code).
fn hot_loop(body: &str, opcode: &str) -> Option<(usize, String)> {
    let lines: Vec<&str> = body.lines().collect();
    let mut best: Option<(usize, Vec<&str>)> = None;
    for (start, line) in lines.iter().enumerate() {
        let Some(label) = line.strip_suffix(':').filter(|l| l.starts_with(".LBB")) else {
            continue;
        };
        let Some(end) = (start + 1..lines.len()).rev().find(|&j| {
            let t = lines[j].trim();
            t.starts_with('b') && t.split_whitespace().last() == Some(label)
        }) else {
            continue;
        };
        let inner = &lines[start + 1..end];
        let nested = inner.iter().any(|l| {
            l.starts_with(".LBB") && {
                let label = l.trim_end_matches(':');
                inner.iter().any(|b| {
                    b.trim().starts_with('b') && b.split_whitespace().last() == Some(label)
                })
            }
        });
        if nested {
            continue;
        }
        let code: Vec<&str> = inner
            .iter()
            .copied()
            .filter(|l| !l.starts_with(".LBB"))
            .collect();
        let count = code
            .iter()
            .filter(|l| l.trim_start().starts_with(opcode))
            .count();
        // Most of `opcode`; of loops with as many, the shortest (the merge's hot loop
        // and its careful loop for the last blocks hold one 16 + 16 network each).
        let better = best
            .as_ref()
            .is_none_or(|(c, b)| count > *c || (count == *c && code.len() < b.len()));
        if count > 0 && better {
            best = Some((count, code));
        }
    }
    best.map(|(count, code)| (count, code.join("\n") + "\n"))
}

/// The instructions of the function whose mangled name contains `symbol`: from its
/// label to `.Lfunc_end`, without directives, comments or the final `ret`. Local
/// `.LBB` labels are kept (llvm-mca ignores them; [`hot_loop`] needs them).
fn function_body(asm: &str, symbol: &str) -> Option<String> {
    let mut lines = asm
        .lines()
        .skip_while(|l| !(l.contains(symbol) && l.ends_with(':') && !l.starts_with('\t')));
    lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| !l.starts_with(".Lfunc_end"))
        .map(|l| l.split("//").next().unwrap_or(l).trim_end())
        .filter(|l| {
            let t = l.trim_start();
            l.starts_with(".LBB") || !(t.starts_with('.') || t.is_empty() || t == "ret")
        })
        .collect();
    (!body.is_empty()).then(|| body.join("\n") + "\n")
}
