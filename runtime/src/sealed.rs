//! Small state files that must survive crashes and refuse damage: a magic tag, the value
//! in postcard, and an FNV-1a 64 checksum of the body, written by temp file, fsync,
//! rename and directory fsync ([`crate::paths::write_atomic`]). A reader gets the last
//! complete version or a typed error, never half a file.

use crate::fnv::fnv1a64;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a sealed file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Not such a file, damaged, too large, or from another version.
    #[error("{path}: {what}; move it away to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
}

/// Writes `value` to `path` under `magic`, crash-safely.
pub fn save<T: Serialize>(path: &Path, magic: &[u8; 8], value: &T) -> Result<(), SealedError> {
    let body = postcard::to_allocvec(value).map_err(|_| SealedError::Corrupt {
        path: path.to_path_buf(),
        what: "cannot serialise",
    })?;
    save_streamed(path, magic, |out| out(&body))
}

/// Writes under `magic`, crash-safely, the body `write` hands to its argument piece by
/// piece: for values too large to hold twice. The pieces must add up to the postcard
/// encoding of the value [`load`] will read.
pub fn save_streamed(
    path: &Path,
    magic: &[u8; 8],
    write: impl FnOnce(&mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()>,
) -> Result<(), SealedError> {
    use std::io::Write;
    crate::paths::write_atomic_with(path, 0o600, |file| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(magic)?;
        let mut sum = fnv1a64(b"");
        write(&mut |piece: &[u8]| {
            sum = crate::fnv::extend(sum, piece);
            out.write_all(piece)
        })?;
        out.write_all(&sum.to_le_bytes())?;
        out.flush()
    })
    .map_err(|error| SealedError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// The value in `path`, `None` if there is no file; files over `max_bytes` are refused
/// before they are read.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    magic: &[u8; 8],
    max_bytes: u64,
) -> Result<Option<T>, SealedError> {
    let io = |error| SealedError::Io {
        path: path.to_path_buf(),
        error,
    };
    let corrupt = |what| SealedError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > max_bytes => return Err(corrupt("larger than any state")),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let body = bytes
        .strip_prefix(magic)
        .ok_or_else(|| corrupt("bad magic"))?;
    let (body, sum) = body
        .split_last_chunk::<8>()
        .ok_or_else(|| corrupt("truncated"))?;
    if fnv1a64(body) != u64::from_le_bytes(*sum) {
        return Err(corrupt("checksum mismatch"));
    }
    postcard::from_bytes(body)
        .map(Some)
        .map_err(|_| corrupt("undecodable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage_size_and_other_magic() {
        let dir = std::env::temp_dir().join(format!("tandem-sealed-{}", std::process::id()));
        let path = dir.join("state.bin");
        let magic = b"TNDMTEST";
        assert!(load::<Vec<u32>>(&path, magic, 1 << 20).unwrap().is_none());
        save(&path, magic, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(
            load::<Vec<u32>>(&path, magic, 1 << 20).unwrap(),
            Some(vec![1, 2, 3])
        );
        assert!(load::<Vec<u32>>(&path, b"TNDMELSE", 1 << 20).is_err());
        assert!(load::<Vec<u32>>(&path, magic, 4).is_err());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = load::<Vec<u32>>(&path, magic, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::write(&path, b"TNDMTES").unwrap();
        assert!(load::<Vec<u32>>(&path, magic, 1 << 20).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
