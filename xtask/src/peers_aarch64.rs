//! The aarch64 part of `cargo xtask bench peers --aarch64`: the same two tandem programs
//! cross-built in release and counted under qemu with the TCG plugin (instructions, never
//! time; see [`crate::insn`]). Each is run twice with a different amount of work, and the
//! difference is the work alone: start-up, data and model loading and the final
//! evaluation cancel. Both run with one rayon thread (`RAYON_NUM_THREADS=1`): the same
//! instructions as on more cores, without the pool's idle spinning in the count.

use crate::insn::{self, Counts};
use crate::peers::split_args;
use crate::peers_fl::simulate_args;
use crate::split::CloudProcess;
use crate::{cross, util};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The guest's environment for every count.
const ENV: &[(&str, &str)] = &[("RAYON_NUM_THREADS", "1")];

/// Counts of one federated round and of one split device step.
pub struct Aarch64Counts {
    pub fl_round: Counts,
    pub split_step: Counts,
}

/// Cross-builds `tandem` and `tandem-cloud` (release) and counts both programs; `x86_bin`
/// holds the host's tandem-cloud that the aarch64 device trains against.
pub fn count(x86_bin: &Path, corpus: &Path) -> Result<Aarch64Counts> {
    eprintln!("peers: aarch64 release build (about 10 min cold)");
    cross::cargo(
        &[
            "build",
            "--quiet",
            "--release",
            "-p",
            "tandem-runtime",
            "-p",
            "tandem-cloud",
            "--bins",
        ]
        .map(String::from),
    )?;
    let bin: PathBuf = util::target_dir().join(cross::TARGET).join("release");
    let plugin = insn::build_plugin()?;
    let run = |program: &str, args: &[String]| insn::count(&plugin, &bin.join(program), args, ENV);

    // Their files go beside the x86 runs', not into the working directory or over the
    // demo device's checkpoint in the cache.
    let dir = util::target_dir().join("peers");
    let files = |args: &mut Vec<String>, flags: &[(&str, &str)]| {
        for (flag, file) in flags {
            args.extend([flag.to_string(), dir.join(file).display().to_string()]);
        }
    };
    eprintln!("peers: aarch64 federated round, counted (2 rounds minus 1)");
    let simulate = |rounds: &str| -> Result<Counts> {
        let mut args: Vec<String> = simulate_args(rounds, "1")
            .into_iter()
            .map(String::from)
            .collect();
        files(
            &mut args,
            &[
                ("--metrics", "aarch64-fl.json"),
                ("--plot", "aarch64-fl.png"),
            ],
        );
        run("tandem-cloud", &args)
    };
    let fl_round = difference(simulate("2")?, simulate("1")?, 1);

    eprintln!("peers: aarch64 split device step, counted (4 steps minus 2, halved)");
    let mut cloud = CloudProcess::start(x86_bin, &[])?;
    let steps = |n: usize| {
        let mut args = split_args(&cloud.addr, corpus, n);
        files(
            &mut args,
            &[
                ("--metrics", "aarch64-split.json"),
                ("--plot", "aarch64-split.png"),
                ("--checkpoint", "aarch64-split.ckpt"),
            ],
        );
        run("tandem", &args)
    };
    let counted = steps(4).and_then(|four| Ok((four, steps(2)?)));
    cloud.stop();
    let (four, two) = counted?;
    Ok(Aarch64Counts {
        fl_round,
        split_step: difference(four, two, 2),
    })
}

/// `(more - less) / units`.
fn difference(more: Counts, less: Counts, units: u64) -> Counts {
    Counts {
        total: more.total.saturating_sub(less.total) / units,
        simd: more.simd.saturating_sub(less.simd) / units,
    }
}

impl Aarch64Counts {
    /// The table, beside the x86_64 times of the same work.
    pub fn print(&self, fl_round_s: f64, split_device_ms: f64) {
        println!(
            "\n| aarch64 (release cross-build, qemu plugin, one rayon thread) | instructions | of which SIMD | x86_64 time of the same work (above) |\n|---|---|---|---|"
        );
        let row = |what: &str, c: &Counts, time: String| {
            println!(
                "| {what} | {:.2} G | {:.2} G ({:.0}%) | {time} |",
                c.total as f64 / 1e9,
                c.simd as f64 / 1e9,
                100.0 * c.simd as f64 / c.total.max(1) as f64
            );
        };
        row(
            "one federated round (10 clients x 600 images, FedAvg, 10,000-image test)",
            &self.fl_round,
            format!("{fl_round_s:.2} s on 2 cores"),
        );
        row(
            "one split device step (bottom forward + backward + AdamW, 420 tokens)",
            &self.split_step,
            format!("{split_device_ms:.1} ms on 2 cores"),
        );
    }
}
