//! A federated run's state on disk, committed after every round: the round reached, the
//! global model, the server optimiser's moments. One file, written crash-safely (temp
//! file, fsync, rename, fsync of the directory), with the task name and the model's
//! layout fingerprint so a cloud restarted on another run's state refuses it, and a
//! checksum so a damaged file is refused rather than trained on.

use std::path::{Path, PathBuf};

/// The state file in a `--state` directory.
pub const FILE_NAME: &str = "fl-state.bin";
const MAGIC: &[u8; 8] = b"TNDMFLS1";

/// The most parameters a state file may hold (as the codecs' `MAX_ELEMENTS`).
const MAX_VALUES: usize = tandem_runtime::codec::MAX_ELEMENTS;

/// Everything a restarted cloud needs to continue with the next round.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// The task's name.
    pub task: String,
    /// The model's layout fingerprint.
    pub layout: u64,
    /// The last committed (or aborted) round.
    pub round: u64,
    /// The global model.
    pub global: Vec<f32>,
    /// Strategy first moment (may be empty).
    pub first: Vec<f32>,
    /// Strategy second moment (may be empty).
    pub second: Vec<f32>,
    /// Aggregations the strategy has done.
    pub steps: u64,
}

/// Why a state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// Not a state file, damaged, or from another version.
    #[error("{path}: not a valid tandem FL state ({what}); move it away to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A state of another task or model.
    #[error(
        "{path}: state of task '{found}' (layout {found_layout:016x}), not of '{expected}' (layout {expected_layout:016x}); use another --state directory"
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Task asked for.
        expected: String,
        /// Its layout.
        expected_layout: u64,
        /// Task in the file.
        found: String,
        /// Its layout.
        found_layout: u64,
    },
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl RunState {
    /// Writes the state into `dir` crash-safely.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(FILE_NAME);
        let body = postcard::to_allocvec(self).map_err(|_| StateError::Corrupt {
            path: path.clone(),
            what: "cannot serialise",
        })?;
        let mut bytes = Vec::with_capacity(body.len() + 16);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&fnv1a64(&body).to_le_bytes());
        tandem_runtime::paths::write_atomic(&path, &bytes, 0o600)
            .map_err(|error| StateError::Io { path, error })
    }

    /// The state in `dir`, `None` if there is none; refused if it belongs to another
    /// task or layout.
    pub fn load(dir: &Path, task: &str, layout: u64) -> Result<Option<Self>, StateError> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(StateError::Io { path, error }),
        };
        let corrupt = |what| StateError::Corrupt {
            path: path.clone(),
            what,
        };
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| corrupt("bad magic"))?;
        let (body, sum) = body
            .split_last_chunk::<8>()
            .ok_or_else(|| corrupt("truncated"))?;
        if fnv1a64(body) != u64::from_le_bytes(*sum) {
            return Err(corrupt("checksum mismatch"));
        }
        // Lengths inside are bounded by the file, itself checked whole above.
        let state: Self = postcard::from_bytes(body).map_err(|_| corrupt("undecodable"))?;
        if state.task != task || state.layout != layout {
            return Err(StateError::Foreign {
                path,
                expected: task.to_string(),
                expected_layout: layout,
                found: state.task,
                found_layout: state.layout,
            });
        }
        let n = state.global.len();
        if n > MAX_VALUES
            || (!state.first.is_empty() && state.first.len() != n)
            || (!state.second.is_empty() && state.second.len() != n)
        {
            return Err(corrupt("inconsistent lengths"));
        }
        Ok(Some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tandem-fl-state-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn state() -> RunState {
        RunState {
            task: "fmnist".into(),
            layout: 42,
            round: 7,
            global: vec![1.0, -2.5, 3.25],
            first: vec![0.1, 0.2, 0.3],
            second: Vec::new(),
            steps: 7,
        }
    }

    #[test]
    fn saves_and_loads_and_refuses_foreign_or_damaged_state() {
        let d = dir("roundtrip");
        assert_eq!(RunState::load(&d, "fmnist", 42).unwrap(), None);
        state().save(&d).unwrap();
        assert_eq!(RunState::load(&d, "fmnist", 42).unwrap(), Some(state()));
        let foreign = RunState::load(&d, "sentiment", 42).unwrap_err();
        assert!(foreign.to_string().contains("another --state"), "{foreign}");
        assert!(matches!(
            RunState::load(&d, "fmnist", 43),
            Err(StateError::Foreign { .. })
        ));
        let path = d.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            RunState::load(&d, "fmnist", 42),
            Err(StateError::Corrupt {
                what: "checksum mismatch",
                ..
            })
        ));
        std::fs::write(&path, b"TNDM").unwrap();
        assert!(matches!(
            RunState::load(&d, "fmnist", 42),
            Err(StateError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
