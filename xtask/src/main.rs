//! tandem's developer tasks, run as `cargo xtask <task>`.
//!
//! - `setup`: install the Debian packages and download the model and data (idempotent).
//! - `demo`: the README's main command: set-up, then split fine-tuning of MiniLM with
//!   tandem-cloud and tandem on loopback; `demo fl`: federated learning, tandem-cloud and
//!   four `tandem fl` devices on loopback.
//! - `ci`: the README's test command: set-up, fmt, clippy, tests (x86_64 and aarch64
//!   under qemu), the aarch64 link check of `tandem` (profile `ci-cross`), and the Hello demo;
//!   each step timed.
//! - `bench <name>`: a benchmark, e.g. `sort` (native) or `sort-insns` (qemu counts).
//! - `fuzz <target|all> [seconds]`: cargo-fuzz targets from `fuzz/`, coverage-guided.
//! - `reliability crash|netem|hostile`: split and federated devices, then the cloud,
//!   killed and restarted; runs over lossy links; steps and updates lost or doubled
//!   against clean runs; a hostile client's attacks and what the cloud did about each.
//! - `gpu-kit`: packs the GPU check for a lent GPU machine.
//! - `insn-count -- <aarch64 binary> [args]`: executed instructions under qemu.
//! - `aarch64 <cargo args>`: cargo for aarch64-unknown-linux-gnu with Debian's rustc.

mod bench;
mod ci;
mod cloud_bench;
mod cross;
mod demo;
mod fl;
mod fl_adapt;
mod fl_attack;
mod fl_dp;
mod fl_sentiment;
mod fuzz;
mod gpu_kit;
mod insn;
mod mca;
mod peers;
mod peers_aarch64;
mod peers_device;
mod peers_fl;
mod reliability;
mod setup;
mod split;
mod split_bench;
mod util;

use anyhow::{Result, bail};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  setup [--no-apt]      install Debian packages (cross toolchain, qemu, llvm, data) and
                        download + verify the model and data into the tandem cache
  demo [flags]          set-up, then split fine-tuning of MiniLM on loopback (tandem-cloud +
                        `tandem split`; flags go to `tandem split`, e.g. --steps 100)
  demo fl [flags]       set-up, then federated learning on loopback: tandem-cloud serve
                        --app fl and 4 `tandem fl` devices (flags go to the cloud)
  ci                    set-up, then every check CI runs (fmt, clippy, tests on x86_64
                        and aarch64/qemu, aarch64 link check, hello demo)
  bench <name>          run a benchmark: sort, transport, lowrank (native, release), split
                        (identity vs sft on loopback, release processes), fl [--rounds N]
                        (simulated federated runs: strategies x partitions x codecs), fl-dp
                        [--rounds N] (accuracy at epsilon 1, 4, 8 with central DP),
                        fl-sentiment [--rounds N] (MiniLM LoRA across movies against
                        centralised at the same examples), fl-adapt [--rounds N]
                        (devices of 4 speeds and uplinks against a deadline, with and
                        without --adapt), fl-attack [--rounds N] (one client declaring
                        2^24 examples, its update sign-flipped x10, beside nine honest
                        ones, with and without the median caps and --clip), secagg
                        (secure aggregation's cost), sort-insns
                        (aarch64 instructions per key under qemu), sort-mca (llvm-mca),
                        lowrank-insns (qemu counts), lowrank-mca (llvm-mca), cloud
                        (steps/s, latency, fairness and memory per split device for each
                        --top, batching, a hostile device), peers (split step, FL
                        simulation and device footprint beside PyTorch and Flower on the
                        same cores; a venv outside the repo; --aarch64 adds qemu counts)
  gpu-kit               pack the GPU check (bench/gpu/run.sh: tandem-cloud --features
                        vulkan, PyTorch beside it) into .gpu/ and .gl/ for a lent GPU
  fuzz <target|all> [seconds] [-- libfuzzer args]
                        coverage-guided fuzzing on stable (frame_roundtrip, split_ops,
                        round_ops, codec_decode, tensor_assembly; all: each in turn,
                        `all 600` before a release); corpus in fuzz/corpus, crashes in
                        fuzz/artifacts
  reliability crash [--cycles N] [--cloud-cycles N] [--steps N] [--fl-cycles N]
                    [--fl-cloud-cycles N] [--rounds N] [--seed S] [--only split|fl]
                        kill -9 the split device at random moments (50 times, resumed
                        each time), then tandem-cloud under a running device (10 times,
                        restarted in place); the same for federated rounds (devices 20
                        times, the cloud 10 times mid-round); steps and updates lost or
                        doubled against runs never killed
  reliability netem [--steps N] [--rounds N] [--only split|fl]
                        a split run and a federated run (4 devices) through UDP relays
                        that drop, delay, corrupt, reorder or black out datagrams, per
                        profile, against the clean link: wall time, steps and updates
                        lost or doubled
  reliability hostile [--rounds N]
                        `tandem hostile` (garbage, truncated and oversized frames, version
                        and schema mismatches, wrong-way kinds, 10,000 streams, 1,000
                        connections, slowloris, replayed updates, a revoked certificate)
                        against a federated cloud with 4 honest devices, against the
                        same run unattacked: each attack's refusal, peak RSS, round times
  insn-count -- <aarch64 binary> [args]
                        count the instructions it executes under qemu (TCG plugin)
  aarch64 <cargo args>  run cargo for aarch64-unknown-linux-gnu with Debian's rustc,
                        e.g. `cargo xtask aarch64 test -p tandem-kernels`

environment:
  TANDEM_CACHE          where the model, data and dev certificates live (~/.cache/tandem)
  TANDEM_BIN_DIR        demo and bench split: run these binaries, build nothing
  CARGO_TARGET_DIR      build directory (ci uses it when set; .ci/run sets a warm one)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => {
            println!("{USAGE}");
            return Ok(());
        }
    };
    match task {
        "setup" => setup::run(&setup::Options::parse(rest)?),
        "demo" => demo::run(rest),
        "ci" => ci::run(),
        "aarch64" => cross::cargo(rest),
        "bench" => bench::run(rest),
        "insn-count" => insn::run(rest),
        "fuzz" => fuzz::run(rest),
        "reliability" => reliability::run(rest),
        "gpu-kit" => gpu_kit::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task '{other}'\n\n{USAGE}"),
    }
}
