//! `cargo xtask bench <name>`: runs one benchmark natively in release mode. Each prints
//! a table and, as its last line, its headline figure.

use crate::util;
use anyhow::{Result, bail};

/// The native benchmarks, as (name, package, bench target, extra cargo flags).
const BENCHES: &[(&str, &str, &str, &[&str])] = &[
    ("sort", "tandem-kernels", "sort", &[]),
    // tandem-tests' benches without burn: the transport and the protocol need none of
    // it, and the bench profile would build it.
    (
        "transport",
        "tandem-tests",
        "transport",
        &["--no-default-features"],
    ),
    ("lowrank", "tandem-kernels", "lowrank", &[]),
    (
        "secagg",
        "tandem-tests",
        "secagg",
        &["--no-default-features"],
    ),
];

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("sort-insns") => return crate::insn::sort_insns(),
        Some("sort-mca") => return crate::mca::sort_mca(),
        Some("lowrank-insns") => return crate::insn::lowrank_insns(),
        Some("fl-codec-insns") => return crate::insn::fl_codec_insns(),
        Some("lowrank-mca") => return crate::mca::lowrank_mca(),
        Some("split") => return crate::split_bench::bench(&args[1..]),
        Some("cloud") => return crate::cloud_bench::bench(&args[1..]),
        Some("fl") => return crate::fl::bench(&args[1..]),
        Some("fl-quic") => return crate::fl::quic_bench(&args[1..]),
        Some("fl-dp") => return crate::fl_dp::bench(&args[1..]),
        Some("fl-sentiment") => return crate::fl_sentiment::bench(&args[1..]),
        Some("fl-adapt") => return crate::fl_adapt::bench(&args[1..]),
        Some("fl-attack") => return crate::fl_attack::bench(&args[1..]),
        Some("peers") => return crate::peers::bench(&args[1..]),
        _ => {}
    }
    let mut names: Vec<&str> = BENCHES.iter().map(|b| b.0).collect();
    names.extend([
        "sort-insns",
        "sort-mca",
        "lowrank-insns",
        "lowrank-mca",
        "fl-codec-insns",
        "split",
        "cloud",
        "fl",
        "fl-quic",
        "fl-dp",
        "fl-sentiment",
        "fl-adapt",
        "fl-attack",
        "peers",
    ]);
    let Some(name) = args.first() else {
        bail!(
            "usage: cargo xtask bench <name>; benchmarks: {}",
            names.join(", ")
        );
    };
    let Some(&(_, package, target, extra)) = BENCHES.iter().find(|b| b.0 == name) else {
        bail!(
            "unknown benchmark '{name}'; benchmarks: {}",
            names.join(", ")
        );
    };
    util::run(
        util::cargo()
            .args(["bench", "--quiet", "-p", package, "--bench", target])
            .args(extra),
    )
}
