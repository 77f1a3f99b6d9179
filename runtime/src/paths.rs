//! Where tandem keeps files, and how it writes them without losing data on a crash.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that overrides [`cache_dir`].
pub const CACHE_ENV: &str = "TANDEM_CACHE";

/// tandem's cache: `$TANDEM_CACHE` if set, else `$HOME/.cache/tandem`, else
/// `./.tandem-cache` when there is no home directory. Holds the model, data sets and
/// development certificates that `cargo xtask setup` and `tandem-cloud` create.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("tandem"),
        None => PathBuf::from(".tandem-cache"),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one,
/// never a torn one: temp file in the same directory -> fsync -> rename -> fsync dir.
/// Creates missing parent directories. `mode` is the Unix permission of the new file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_with(path, mode, |file| file.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes into the new file (for contents too large
/// to hold in memory at once).
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover temp file (a crash of an earlier process with the same pid) is removed;
    // `create_new` then refuses to follow anything planted at that name meanwhile.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The environment variable naming a file where [`skip_missing_cache`] notes each skip
/// (one line: test binary, test, what was missing). `cargo xtask ci` sets it and counts
/// those tests as skipped, not passed, in its closing line.
pub const SKIP_LOG_ENV: &str = "TANDEM_SKIP_LOG";

/// For tests that need the cached model or data: notes `missing` and returns, so the
/// test can skip, on a developer's machine; panics where `CI` is set, because CI runs
/// the set-up and a skip there would hide a test that never ran. Where
/// [`SKIP_LOG_ENV`] names a file, the skip is noted there too (see [`note_skip`]).
pub fn skip_missing_cache(missing: impl std::fmt::Display) {
    if std::env::var_os("CI").is_some() {
        panic!("CI must have the set-up's files: {missing}");
    }
    eprintln!("skipped: {missing}; run `cargo xtask setup`");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        let binary = std::env::current_exe().ok();
        let binary = binary
            .as_deref()
            .and_then(Path::file_name)
            .map_or_else(|| "?".into(), |n| n.to_string_lossy());
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("?");
        if let Err(err) = note_skip(Path::new(&log), &binary, test, &missing.to_string()) {
            eprintln!(
                "cannot note the skip in {}: {err}",
                Path::new(&log).display()
            );
        }
    }
}

/// Appends `binary \t test \t missing` (tabs and newlines in them made spaces) to `log`,
/// in one write, so tests skipping on several threads do not interleave.
pub fn note_skip(log: &Path, binary: &str, test: &str, missing: &str) -> std::io::Result<()> {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let line = format!("{}\t{}\t{}\n", clean(binary), clean(test), clean(missing));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?
        .write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_creates_dirs_replaces_and_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tandem-paths-{}", std::process::id()));
        let file = dir.join("a/b/key.pem");
        write_atomic(&file, b"one", 0o600).unwrap();
        write_atomic(&file, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file left behind.
        let entries: Vec<_> = std::fs::read_dir(file.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn skips_are_noted_one_line_each_with_separators_cleaned() {
        let log = std::env::temp_dir().join(format!("tandem-skips-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        note_skip(&log, "model_tests-1a2b", "split::learns", "no model at /x").unwrap();
        note_skip(&log, "model_tests-1a2b", "a\tb", "line\nbreak").unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text,
            "model_tests-1a2b\tsplit::learns\tno model at /x\nmodel_tests-1a2b\ta b\tline break\n"
        );
        std::fs::remove_file(&log).unwrap();
    }
}
