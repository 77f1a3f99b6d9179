//! Running commands and locating the workspace.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of `xtask/`).
///
/// Taken from `CARGO_MANIFEST_DIR` at run time (`cargo xtask` sets it), not at compile
/// time: with a target directory shared between clones, cargo may reuse an xtask binary
/// built in another clone, whose compile-time path would point at that clone's sources.
pub fn workspace_root() -> PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    xtask.parent().map(PathBuf::from).unwrap_or(xtask)
}

/// The cargo that invoked us (rustup's), falling back to `cargo` on PATH.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// The directory cargo builds into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Fails with one line unless the file system holding `dir` (or its nearest existing
/// parent) has `gib` GiB free; prints what it has.
pub fn require_free_disk(dir: &Path, gib: u64) -> Result<()> {
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    let out = Command::new("df")
        .args(["-Pk"])
        .arg(existing)
        .output()
        .context("cannot run df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let free_kib: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot read df's answer for {}: {text}", existing.display()))?;
    let free_gib = free_kib as f64 / (1024.0 * 1024.0);
    eprintln!("{}: {free_gib:.1} GiB free", existing.display());
    if free_kib < gib * 1024 * 1024 {
        bail!(
            "{} has {free_gib:.1} GiB free; the builds need about {gib} GiB: free some, or set CARGO_TARGET_DIR to a roomier disk",
            existing.display()
        );
    }
    Ok(())
}

/// Prints `$ cmd`, runs it with inherited stdio, fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout, or None if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as a person would type it.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Whether we run as root (apt needs it).
pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

/// tandem's cache directory; mirrors `tandem_runtime::paths::cache_dir` (xtask must not
/// depend on the runtime, which pulls in burn).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("tandem"),
        None => PathBuf::from(".tandem-cache"),
    }
}

/// The value after the last `name` in `args`.
pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .rposition(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The number after the last `name` in `args`, or `default` without one.
pub fn number_flag<T>(args: &[String], name: &str, default: T) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    flag(args, name).map_or(Ok(default), |v| {
        v.parse()
            .with_context(|| format!("{name} takes a number, got '{v}'"))
    })
}

/// The `q` quantile (0 to 1, nearest rank) of `values`, which it sorts; NaN for none.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let last = values.len().saturating_sub(1);
    values
        .get((last as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// `args` without any `name VALUE` pair.
pub fn without_flag<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    without_flags(args, &[name])
}

/// `args` without any `NAME VALUE` pair of `names`.
pub fn without_flags<'a>(args: &'a [String], names: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if names.contains(&arg.as_str()) {
            skip = true;
            continue;
        }
        out.push(arg.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_ranks_of_the_sorted_values() {
        let mut values = [3.0, 1.0, 4.0, 2.0];
        assert_eq!(quantile(&mut values, 0.0), 1.0);
        assert_eq!(quantile(&mut values, 0.5), 3.0);
        assert_eq!(quantile(&mut values, 1.0), 4.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn a_number_flag_is_parsed_or_refused_with_its_name() {
        let args: Vec<String> = ["--rounds", "7", "--seed", "x"].map(String::from).to_vec();
        assert_eq!(number_flag(&args, "--rounds", 1u64).unwrap(), 7);
        assert_eq!(number_flag(&args, "--steps", 5u64).unwrap(), 5);
        let err = number_flag(&args, "--seed", 1u64).unwrap_err();
        assert!(
            err.to_string().contains("--seed takes a number, got 'x'"),
            "{err}"
        );
    }
}
