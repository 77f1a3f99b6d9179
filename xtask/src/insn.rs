//! Instruction counting under qemu with the TCG plugin in `xtask/insn-count-plugin`.
//!
//! Counts are of dynamically executed guest instructions: repeatable and independent of
//! the host's load, unlike any wall time taken under qemu (which means nothing for NEON).

use crate::{cross, util};
use anyhow::{Context, Result, bail};
use std::cell::RefCell;
use std::collections::HashMap;
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

/// Runs `program args` under qemu-aarch64 with the plugin, `env` added to its
/// environment; returns its counts.
pub fn count(
    plugin: &std::path::Path,
    program: &std::path::Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<Counts> {
    let out = Command::new("qemu-aarch64")
        .envs(env.iter().copied())
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
    let counts = count(&plugin, program.as_ref(), rest, &[])?;
    println!(
        "instructions executed: {} total, {} SIMD",
        counts.total, counts.simd
    );
    Ok(())
}

/// How an example is compiled for counting.
#[derive(Clone, Copy, PartialEq)]
enum Build {
    /// The release profile as shipped.
    Release,
    /// The release profile with LLVM's loop and SLP vectorisers off: a scalar build of
    /// the same source, in its own target directory.
    Scalar,
    /// The release profile with tandem-kernels' `portable` feature (its scalar kernels,
    /// no NEON), in its own target directory.
    Portable,
}

/// An example to count: its package, the flags that select its features, its name.
struct Example {
    package: &'static str,
    flags: &'static [&'static str],
    name: &'static str,
}

impl Example {
    const fn kernels(name: &'static str) -> Self {
        Self {
            package: "tandem-kernels",
            flags: &[],
            name,
        }
    }
}

/// Cross-builds `example` (release) and returns its path.
fn build_example(example: &Example, build: Build) -> Result<PathBuf> {
    let mut target = util::target_dir();
    let mut env = Vec::new();
    let mut features: Vec<&str> = example.flags.to_vec();
    match build {
        Build::Release => {}
        Build::Scalar => {
            target = target.join("scalar-build");
            env.push((
                "RUSTFLAGS",
                "-C llvm-args=-vectorize-loops=false -C llvm-args=-vectorize-slp=false",
            ));
        }
        Build::Portable => {
            target = target.join("portable-build");
            features.extend(["--features", "tandem-kernels/portable"]);
        }
    }
    let mut args: Vec<String> = ["build", "--quiet", "--release", "-p", example.package]
        .map(String::from)
        .to_vec();
    args.extend(features.iter().map(|f| f.to_string()));
    args.extend(["--example", example.name, "--target-dir"].map(String::from));
    args.push(target.display().to_string());
    cross::cargo_with_env(&args, &env)?;
    Ok(target
        .join(cross::TARGET)
        .join("release/examples")
        .join(example.name))
}

/// Counts of `program method args..` minus those of `program none args..` (the set-up,
/// counted once per argument list).
struct Counter {
    plugin: PathBuf,
    program: PathBuf,
    set_up: RefCell<HashMap<Vec<usize>, Counts>>,
}

impl Counter {
    fn new(example: &Example, build: Build) -> Result<Self> {
        Ok(Self {
            program: build_example(example, build)?,
            plugin: build_plugin()?,
            set_up: RefCell::default(),
        })
    }

    fn run(&self, method: &str, args: &[usize]) -> Result<Counts> {
        let mut argv = vec![method.to_string()];
        argv.extend(args.iter().map(usize::to_string));
        count(&self.plugin, &self.program, &argv, &[])
    }

    /// The work of `method` alone: its counts less those of `none` with the same args.
    fn work(&self, method: &str, args: &[usize]) -> Result<Counts> {
        let cached = self.set_up.borrow().get(args).copied();
        let base = match cached {
            Some(base) => base,
            None => {
                let base = self.run("none", args)?;
                self.set_up.borrow_mut().insert(args.to_vec(), base);
                base
            }
        };
        let c = self.run(method, args)?;
        Ok(Counts {
            total: c.total.saturating_sub(base.total),
            simd: c.simd.saturating_sub(base.simd),
        })
    }
}

/// `cargo xtask bench sort-insns`: instructions per key at 1M keys, all built for
/// aarch64: tandem's u32 sort against `sort_unstable` (the headline), and its f32 sort
/// against `sort_unstable_by(f32::total_cmp)` and against std sorting the same integer
/// keys; u32 again on uniform random keys; and its (key, index) pair sort against zip +
/// `sort_unstable_by` + unzip. Last line: `sort_insns_ratio_vs_std: Z` (u32 on the
/// floats' bit patterns, std over tandem).
pub fn sort_insns() -> Result<()> {
    let counter = Counter::new(&Example::kernels("sort_work"), Build::Release)?;
    let n: usize = 1 << 20;
    println!(
        "{:<36} {:>10} {:>10} {:>11}",
        "sort of 1M keys (aarch64)", "insns/key", "SIMD/key", "SIMD share"
    );
    let mut per_key = std::collections::HashMap::new();
    for (label, method) in [
        ("u32: tandem sort_u32 (NEON)", "tandem-u32"),
        ("u32: sort_unstable", "std-u32"),
        ("f32: tandem sort_f32 (NEON)", "tandem"),
        ("f32: sort_unstable_by(total_cmp)", "std"),
        ("f32: sort_unstable on the same keys", "std-keys"),
        ("u32 uniform: tandem sort_u32 (NEON)", "tandem-u32-uniform"),
        ("u32 uniform: sort_unstable", "std-u32-uniform"),
        ("pairs: tandem sort_pairs_f32 (NEON)", "pairs"),
        ("pairs: zip, sort_unstable_by, unzip", "pairs-std"),
    ] {
        let c = counter.work(method, &[n])?;
        let total = c.total as f64 / n as f64;
        let simd = c.simd as f64 / n as f64;
        println!(
            "{label:<36} {total:>10.1} {simd:>10.1} {:>10.0}%",
            100.0 * simd / total
        );
        per_key.insert(method, total);
    }
    let ratio = |std: &str, tandem: &str| per_key[std] / per_key[tandem];
    println!(
        "f32: std over tandem {:.2} (total_cmp), {:.2} (same keys)",
        ratio("std", "tandem"),
        ratio("std-keys", "tandem")
    );
    println!(
        "u32 uniform: std over tandem {:.2}; pairs: std over tandem {:.2}",
        ratio("std-u32-uniform", "tandem-u32-uniform"),
        ratio("pairs-std", "pairs")
    );
    println!(
        "sort_insns_ratio_vs_std: {:.2}",
        ratio("std-u32", "tandem-u32")
    );
    Ok(())
}

/// `cargo xtask bench lowrank-insns`: instructions per element of X for the two
/// low-rank products (`X * Q` and `X^T * P`, X 2048 x 384) at ranks 8 and 32, all built
/// for aarch64 in release mode: the NEON kernel, the portable kernel as LLVM builds it
/// normally (its vectorisers on: the baseline a careful user gets, and the headline), and
/// the portable kernel in a scalar build (vectorisers off, a second column). Also int8
/// quantise + dequantise (blocks of 64) of X: tandem's NEON kernels against a plain loop
/// (the same buffers, each allocated once), as built and in the scalar build. Last line:
/// the vectorised build over NEON for the two products at rank 8.
pub fn lowrank_insns() -> Result<()> {
    let release = Counter::new(&Example::kernels("gemm_work"), Build::Release)?;
    let scalar = Counter::new(&Example::kernels("gemm_work"), Build::Scalar)?;
    let (n, d) = (2048usize, 384usize);
    let per_el = |c: Counts| c.total as f64 / (n * d) as f64;
    let share = |c: Counts| 100.0 * c.simd as f64 / c.total as f64;
    println!("instructions per element of X (2048 x 384), aarch64; SIMD share in brackets");
    println!(
        "{:<10} {:>14} {:>18} {:>16} {:>16} {:>14}",
        "product",
        "NEON kernel",
        "portable, as built",
        "scalar build",
        "as built / NEON",
        "scalar / NEON"
    );
    let row = |name: String, neon: Counts, auto: Counts, plain: Counts| {
        println!(
            "{name:<10} {:>8.2} ({:>2.0}%) {:>12.2} ({:>2.0}%) {:>10.2} ({:>2.0}%) {:>16.2} {:>14.2}",
            per_el(neon),
            share(neon),
            per_el(auto),
            share(auto),
            per_el(plain),
            share(plain),
            auto.total as f64 / neon.total as f64,
            plain.total as f64 / neon.total as f64
        );
    };
    let mut headline = (0u64, 0u64);
    for r in [8usize, 32] {
        for product in ["xq", "xtp"] {
            let portable = format!("{product}-scalar");
            let neon = release.work(product, &[n, d, r])?;
            let auto = release.work(&portable, &[n, d, r])?;
            let plain = scalar.work(&portable, &[n, d, r])?;
            row(format!("{product} r={r}"), neon, auto, plain);
            if r == 8 {
                headline.0 += neon.total;
                headline.1 += auto.total;
            }
        }
    }
    let neon = release.work("quant", &[n, d, 0])?;
    let auto = release.work("quant-plain", &[n, d, 0])?;
    let plain = scalar.work("quant-plain", &[n, d, 0])?;
    row("int8 q+dq".into(), neon, auto, plain);
    println!("(int8 q+dq: the portable columns are the plain loop)");
    println!(
        "lowrank_r8_insns_vectorised_build_over_neon: {:.2}",
        headline.1 as f64 / headline.0 as f64
    );
    Ok(())
}

/// `cargo xtask bench fl-codec-insns`: instructions per parameter to encode one
/// federated update of LeNet-5 (61,706 parameters, a fresh encoder) with each update
/// codec, on aarch64 in release mode: tandem's NEON kernels against the same source with
/// tandem-kernels' `portable` feature (its scalar kernels; LLVM still vectorises what it
/// can). Last line: the sum over the codecs, portable over NEON.
pub fn fl_codec_insns() -> Result<()> {
    let example = Example {
        package: "tandem-runtime",
        flags: &["--no-default-features"],
        name: "update_encode",
    };
    let neon = Counter::new(&example, Build::Release)?;
    let portable = Counter::new(&example, Build::Portable)?;
    let params = 61_706.0;
    println!(
        "instructions per parameter to encode a LeNet-5 update, aarch64 release; SIMD share in brackets"
    );
    println!(
        "{:<22} {:>16} {:>16} {:>18}",
        "codec", "NEON kernels", "portable", "portable / NEON"
    );
    let (mut neon_sum, mut portable_sum) = (0u64, 0u64);
    for (codec, label) in [
        ("identity", "identity"),
        ("f16", "f16"),
        ("int8", "int8 (blocks of 64)"),
        ("topk", "topk:ratio=0.01"),
        ("lowrank", "lowrank:r=4,bits=8"),
        ("dct", "dct:keep=0.1"),
        ("acp", "acp:r=4,bits=8"),
    ] {
        let n = neon.work(codec, &[])?;
        let p = portable.work(codec, &[])?;
        neon_sum += n.total;
        portable_sum += p.total;
        let share = |c: Counts| 100.0 * c.simd as f64 / c.total.max(1) as f64;
        println!(
            "{label:<22} {:>9.1} ({:>2.0}%) {:>9.1} ({:>2.0}%) {:>18.2}",
            n.total as f64 / params,
            share(n),
            p.total as f64 / params,
            share(p),
            p.total as f64 / n.total.max(1) as f64
        );
    }
    println!(
        "fl_codec_insns_portable_over_neon: {:.2}",
        portable_sum as f64 / neon_sum.max(1) as f64
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
