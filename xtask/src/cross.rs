//! Cross builds for aarch64 boards with Debian's rustc and cross std.
//!
//! `rustup target add` cannot reach its mirror here, so the aarch64 std comes from
//! Debian (`libstd-rust-web-dev:arm64`), which matches Debian's `rustc-web` (not the
//! rustup toolchain). The linker and the qemu runner are set in `.cargo/config.toml`.

use crate::util;
use anyhow::{Result, bail};
use std::path::Path;

/// The target triple of the boards.
pub const TARGET: &str = "aarch64-unknown-linux-gnu";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";

/// `cargo <args> --target aarch64-unknown-linux-gnu` with Debian's rustc and rustdoc.
pub fn cargo(args: &[String]) -> Result<()> {
    cargo_with_env(args, &[])
}

/// [`cargo`] with extra environment variables (e.g. `RUSTFLAGS`).
pub fn cargo_with_env(args: &[String], env: &[(&str, &str)]) -> Result<()> {
    if args.is_empty() {
        bail!(
            "usage: cargo xtask aarch64 <cargo subcommand> [args], e.g. `test -p tandem-kernels`"
        );
    }
    let std_dir = Path::new("/usr/lib/rustlib").join(TARGET);
    if !Path::new(DEBIAN_RUSTC).exists() || !std_dir.exists() {
        bail!(
            "Debian's rustc or its aarch64 std is missing ({DEBIAN_RUSTC}, {}): run `cargo xtask setup`",
            std_dir.display()
        );
    }
    let mut cmd = util::cargo();
    // `cargo test -- --nocapture`: the target flag must come before the `--`.
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    cmd.args(&args[..split])
        .args(["--target", TARGET])
        .args(&args[split..]);
    cmd.env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTDOC", DEBIAN_RUSTDOC);
    // A RUSTC_WRAPPER or rustup override from the outer cargo must not leak in.
    cmd.env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd.envs(env.iter().copied());
    util::run(&mut cmd)
}
