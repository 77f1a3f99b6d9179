//! `cargo xtask gpu-kit`: packs what the GPU check (`bench/gpu/run.sh`) needs on a lent
//! GPU machine (x86_64, NVIDIA, Python with PyTorch, no Rust, no network, 64 MiB carried):
//! - `.gpu/`: `tandem` and a `tandem-cloud` built with the `vulkan` feature (release,
//!   stripped, xz), the scripts of `bench/gpu/`, the model's tokenizer, vocabulary and
//!   config, the safetensors header (the weights are made there, random, from it) and
//!   the Rotten Tomatoes corpus;
//! - `.gl/`: the Vulkan loader and GL libraries as Debian packages (`apt-get download`).
//!
//! Both folders are kept out of git (`.git/info/exclude`). It prints the device call.

use crate::util;
use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// The device tool carries at most this much.
const CARRY_LIMIT: u64 = 64 << 20;

/// The Vulkan loader and what it loads on the NVIDIA driver's machine.
const GL_PACKAGES: &[&str] = &[
    "libvulkan1",
    "libegl1",
    "libglvnd0",
    "libopengl0",
    "libgl1",
    "libglx0",
    "libgles2",
];

/// The safetensors header is at most this long (MiniLM's is about 20 kB).
const MAX_HEADER: u64 = 1 << 20;

pub fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("gpu-kit takes no arguments");
    }
    let root = util::workspace_root();
    let (kit, gl) = (root.join(".gpu"), root.join(".gl"));
    exclude_from_git(&root, &["/.gpu/", "/.gl/"])?;
    let _ = fs::remove_dir_all(&kit);
    fs::create_dir_all(&kit)?;
    println!("gpu-kit: building tandem and tandem-cloud --features vulkan (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "tandem-runtime",
        "--bin",
        "tandem",
    ]))?;
    let release = util::target_dir().join("release");
    pack_binary(&release.join("tandem"), &kit.join("tandem.xz"))?;
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "tandem-cloud",
        "--features",
        "vulkan",
        "--bin",
        "tandem-cloud",
    ]))?;
    pack_binary(&release.join("tandem-cloud"), &kit.join("tandem-cloud.xz"))?;
    for script in ["run.sh", "make_weights.py", "torch_split.py"] {
        fs::copy(root.join("bench/gpu").join(script), kit.join(script))
            .with_context(|| format!("bench/gpu/{script}"))?;
    }
    let cache = util::cache_dir();
    for file in ["tokenizer.json", "vocab.txt", "config.json"] {
        fs::copy(cache.join("minilm").join(file), kit.join(file))
            .with_context(|| format!("{file}: run `cargo xtask setup` first"))?;
    }
    let corpus = "rotten_tomatoes_corpus_full.csv.bz2";
    fs::copy(cache.join("data").join(corpus), kit.join(corpus))
        .with_context(|| format!("{corpus}: run `cargo xtask setup` first"))?;
    write_header(
        &cache.join("minilm/model.safetensors"),
        &kit.join("header.json"),
    )?;
    download_gl(&gl)?;
    let size = dir_size(&kit)? + dir_size(&gl)?;
    println!(
        "gpu-kit: .gpu and .gl hold {:.1} MiB",
        size as f64 / f64::from(1 << 20)
    );
    if size > CARRY_LIMIT {
        bail!("the kit is over the device tool's 64 MiB");
    }
    println!(
        "gpu-kit: on a lent GPU, run `set -o pipefail; bash .gpu/run.sh 2>&1 | tee $OUT/log.txt` carrying [\".gpu\", \".gl\"] (about 8 minutes)"
    );
    Ok(())
}

/// Strips `binary` and writes it xz-compressed to `to`.
fn pack_binary(binary: &Path, to: &Path) -> Result<()> {
    let stripped = to.with_extension("stripped");
    util::run(Command::new("strip").arg("-o").arg(&stripped).arg(binary))?;
    util::run(Command::new("xz").args(["-9", "-T2", "-f"]).arg(&stripped))?;
    fs::rename(stripped.with_extension("stripped.xz"), to)?;
    Ok(())
}

/// The JSON header of the safetensors file `model` (its tensors' names, dtypes, shapes
/// and offsets), written to `to`.
fn write_header(model: &Path, to: &Path) -> Result<()> {
    let mut file = fs::File::open(model)
        .with_context(|| format!("{}: run `cargo xtask setup` first", model.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        bail!("{}: a header of {len} bytes", model.display());
    }
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header)?;
    fs::write(to, header)?;
    Ok(())
}

/// Downloads [`GL_PACKAGES`] for amd64 into `dir` (apt lists in a temporary folder).
fn download_gl(dir: &Path) -> Result<()> {
    if dir.is_dir() && GL_PACKAGES.iter().all(|p| has_deb(dir, p)) {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let lists = std::env::temp_dir().join("tandem-gpu-kit-apt");
    fs::create_dir_all(lists.join("partial"))?;
    let options = [
        "-oAPT::Architecture=amd64".to_string(),
        "-oAPT::Architectures=amd64".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
    ];
    util::run(Command::new("apt-get").args(&options).arg("update"))?;
    util::run(
        Command::new("apt-get")
            .current_dir(dir)
            .args(&options)
            .arg("download")
            .args(GL_PACKAGES),
    )
}

/// Whether `dir` holds a Debian package of `package`.
fn has_deb(dir: &Path, package: &str) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
        })
    })
}

/// Bytes of the files in `dir` (not recursive: the kit is flat).
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// Adds `patterns` to the checkout's `.git/info/exclude` unless there.
fn exclude_from_git(root: &Path, patterns: &[&str]) -> Result<()> {
    let info = root.join(".git/info");
    fs::create_dir_all(&info)?;
    let path = info.join("exclude");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    for pattern in patterns {
        if !text.lines().any(|l| l == *pattern) {
            text.push_str(pattern);
            text.push('\n');
        }
    }
    fs::write(path, text)?;
    Ok(())
}
