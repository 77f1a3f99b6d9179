//! A federated run's state on disk, committed after every round: the round reached, the
//! global model, the server optimiser's moments. One sealed file (crash-safe, with a
//! checksum: [`tandem_runtime::sealed`]), with the task name and the model's layout
//! fingerprint so a cloud restarted on another run's state refuses it.

use std::path::{Path, PathBuf};
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::sealed::{self, SealedError};

/// The state file in a `--state` directory.
pub const FILE_NAME: &str = "fl-state.bin";
const MAGIC: &[u8; 8] = b"TNDMFLS3";

/// The most parameters a state file may hold (as the codecs' `MAX_ELEMENTS`).
const MAX_VALUES: usize = tandem_runtime::codec::MAX_ELEMENTS;

/// Everything a restarted cloud needs to continue with the next round.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// The task's name.
    pub task: String,
    /// The model's layout fingerprint.
    pub layout: u64,
    /// The strategy the moments belong to (its spec, e.g. `fedavgm:lr=1,momentum=0.9`).
    pub strategy: String,
    /// The last round run, committed or aborted (round ids only increase, so a device
    /// never takes a new round for one it has finished).
    pub round: u64,
    /// Rounds committed: the run ends when they reach `--rounds` (aborted rounds do not
    /// count).
    pub committed: u64,
    /// Each device's example count as its first Join declared it: fixed for the run
    /// ([`super::membership`]).
    pub members: std::collections::BTreeMap<String, u64>,
    /// The global model.
    pub global: Vec<f32>,
    /// The strategy's server state ([`super::strategy::StrategyState`]): its first
    /// moment (may be empty).
    pub first: Vec<f32>,
    /// Its second moment (may be empty).
    pub second: Vec<f32>,
    /// Its steps, where it counts them (FedOpt; 0 for the others, whose older state
    /// files may hold any count).
    pub steps: u64,
    /// The next round's shared factors (ACP codec only).
    pub factors: Option<SharedFactors>,
}

/// Why a state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file could not be read or written, or is damaged.
    #[error(transparent)]
    File(#[from] SealedError),
    /// A state made with another strategy (its server moments would not fit).
    #[error(
        "{path}: state of strategy {found}, not {expected}; pass --strategy {found} or use another --state directory"
    )]
    Strategy {
        /// The file.
        path: PathBuf,
        /// Strategy asked for.
        expected: String,
        /// Strategy in the file.
        found: String,
    },
    /// Server state the run's strategy does not keep (moments for a strategy without
    /// any, or of unequal lengths).
    #[error("{dir}: {error}")]
    StrategyState {
        /// The state directory.
        dir: PathBuf,
        /// What does not fit.
        error: super::strategy::StrategyError,
    },
    /// Central DP asked for on a run whose earlier rounds were not accounted: their
    /// models went out without noise, or the account was lost.
    #[error(
        "{path}: {round} rounds committed without a privacy account ({file}); central DP cannot continue this run: use another --state directory"
    )]
    Unaccounted {
        /// The state file.
        path: PathBuf,
        /// Rounds committed.
        round: u64,
        /// The account's file name.
        file: &'static str,
    },
    /// Another cloud holds the directory's lock: two clouds on one directory would
    /// overwrite each other's state and privacy account.
    #[error(
        "{dir}: another tandem-cloud is using this --state directory (it holds {lock}); stop it or pass another --state"
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("{path}: cannot lock the --state directory: {error}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
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

/// The state file before a run kept its members and committed count (issue 30).
const MAGIC_V2: &[u8; 8] = b"TNDMFLS2";

/// A state written under [`MAGIC_V2`]: every round it counted had committed or aborted
/// alike, and no device's example count was kept.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunStateV2 {
    task: String,
    layout: u64,
    strategy: String,
    round: u64,
    global: Vec<f32>,
    first: Vec<f32>,
    second: Vec<f32>,
    steps: u64,
    factors: Option<SharedFactors>,
}

impl From<RunStateV2> for RunState {
    /// Its rounds all count as committed (as they did then); the devices declare their
    /// counts again at their first Join.
    fn from(old: RunStateV2) -> Self {
        Self {
            task: old.task,
            layout: old.layout,
            strategy: old.strategy,
            round: old.round,
            committed: old.round,
            members: std::collections::BTreeMap::new(),
            global: old.global,
            first: old.first,
            second: old.second,
            steps: old.steps,
            factors: old.factors,
        }
    }
}

/// The lock file in a `--state` directory.
pub const LOCK_FILE: &str = "fl-state.lock";

/// An exclusive lock on a `--state` directory (an advisory `flock` on its lock file),
/// held for as long as this lives: one cloud per directory. The OS drops it when the
/// process dies, so a crashed cloud never leaves its directory locked.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Locks `dir` (created if missing); refused while another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(LOCK_FILE);
        let failed = |error| StateError::Lock {
            path: path.clone(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked {
                dir: dir.to_path_buf(),
                lock: path,
            }),
            Err(std::fs::TryLockError::Error(error)) => Err(failed(error)),
        }
    }
}

impl RunState {
    /// Writes the state into `dir` crash-safely.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        Ok(sealed::save(&dir.join(FILE_NAME), MAGIC, self)?)
    }

    /// The state in `dir`, `None` if there is none; refused if it belongs to another
    /// task, layout or strategy.
    pub fn load(
        dir: &Path,
        task: &str,
        layout: u64,
        strategy: &str,
    ) -> Result<Option<Self>, StateError> {
        let path = dir.join(FILE_NAME);
        // Three vectors of the largest model a codec takes, and change.
        let max_bytes = 3 * 4 * MAX_VALUES as u64 + 4096;
        let loaded = match sealed::load::<Self>(&path, MAGIC, max_bytes) {
            Err(SealedError::Corrupt {
                what: "bad magic", ..
            }) => sealed::load::<RunStateV2>(&path, MAGIC_V2, max_bytes)
                .map(|old| old.map(Self::from)),
            loaded => loaded,
        };
        let Some(state) = loaded? else {
            return Ok(None);
        };
        if state.task != task || state.layout != layout {
            return Err(StateError::Foreign {
                path,
                expected: task.to_string(),
                expected_layout: layout,
                found: state.task,
                found_layout: state.layout,
            });
        }
        if state.strategy != strategy {
            return Err(StateError::Strategy {
                path,
                expected: strategy.to_string(),
                found: state.strategy,
            });
        }
        let n = state.global.len();
        if (!state.first.is_empty() && state.first.len() != n)
            || (!state.second.is_empty() && state.second.len() != n)
        {
            return Err(SealedError::Corrupt {
                path,
                what: "moments of another length than the model",
            }
            .into());
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
            strategy: "fedavg".into(),
            round: 7,
            committed: 6,
            members: [("dev-1".to_string(), 600)].into(),
            global: vec![1.0, -2.5, 3.25],
            first: vec![0.1, 0.2, 0.3],
            second: Vec::new(),
            steps: 7,
            factors: None,
        }
    }

    #[test]
    fn saves_and_loads_and_refuses_foreign_or_damaged_state() {
        let d = dir("roundtrip");
        assert_eq!(RunState::load(&d, "fmnist", 42, "fedavg").unwrap(), None);
        state().save(&d).unwrap();
        assert_eq!(
            RunState::load(&d, "fmnist", 42, "fedavg").unwrap(),
            Some(state())
        );
        let foreign = RunState::load(&d, "sentiment", 42, "fedavg").unwrap_err();
        assert!(foreign.to_string().contains("another --state"), "{foreign}");
        assert!(matches!(
            RunState::load(&d, "fmnist", 43, "fedavg"),
            Err(StateError::Foreign { .. })
        ));
        assert!(matches!(
            RunState::load(&d, "fmnist", 42, "fedadam"),
            Err(StateError::Strategy { .. })
        ));
        let path = d.join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            RunState::load(&d, "fmnist", 42, "fedavg"),
            Err(StateError::File(SealedError::Corrupt {
                what: "checksum mismatch",
                ..
            }))
        ));
        // A state of the previous format (no committed count, no members) is read, its
        // rounds counted as committed.
        let old = RunStateV2 {
            task: "fmnist".into(),
            layout: 42,
            strategy: "fedavg".into(),
            round: 7,
            global: vec![1.0, -2.5, 3.25],
            first: vec![0.1, 0.2, 0.3],
            second: Vec::new(),
            steps: 7,
            factors: None,
        };
        sealed::save(&path, MAGIC_V2, &old).unwrap();
        let migrated = RunState::load(&d, "fmnist", 42, "fedavg").unwrap().unwrap();
        assert_eq!(
            migrated,
            RunState {
                committed: 7,
                members: Default::default(),
                ..state()
            }
        );
        std::fs::write(&path, b"TNDM").unwrap();
        assert!(matches!(
            RunState::load(&d, "fmnist", 42, "fedavg"),
            Err(StateError::File(SealedError::Corrupt { .. }))
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
