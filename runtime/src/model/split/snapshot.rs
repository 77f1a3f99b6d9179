//! A trainer's state between processes, for resuming a split run: the trained module's
//! parameters (burnpack, which keeps parameter ids, so the optimizer's state finds them
//! again), the optimizer's state, the codec's memory and where in the run it is. The
//! device writes one as its checkpoint; the cloud one per checkpoint of each device's
//! top. Both are sealed files (magic, postcard, checksum; written crash-safely).

use crate::codec::EncoderMemory;
use crate::sealed::{self, SealedError};
use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The device's checkpoint file's tag.
pub const DEVICE_MAGIC: &[u8; 8] = b"TNDMSPD1";
/// The tag of the cloud's snapshot of a device's top.
pub const TOP_MAGIC: &[u8; 8] = b"TNDMSPT1";

/// Larger files are refused unread: MiniLM's bottom at cut 5 with AdamW's two moments is
/// about 0.5 GB.
const MAX_SNAPSHOT_BYTES: u64 = 2 << 30;

/// One trainer's state at a step boundary of its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerSnapshot {
    /// The run ([`crate::wire::RunPlan::run`]).
    pub run: u64,
    /// Training steps done: the next step to train, and the optimizer's updates.
    pub next_step: u64,
    /// What the trainer was made for (the device's settings, or the cloud's admission):
    /// a resume must ask for the same.
    pub settings: String,
    /// The trained module's parameters as burnpack bytes (empty for a frozen bottom).
    pub module: Vec<u8>,
    /// The optimizer's state as burnpack bytes (empty without an optimizer).
    pub optimizer: Vec<u8>,
    /// What the codec carries into its next encode.
    pub encoder: EncoderMemory,
}

impl TrainerSnapshot {
    /// Writes the snapshot to `path` under `magic`, crash-safely.
    pub fn save(&self, path: &Path, magic: &[u8; 8]) -> Result<(), SealedError> {
        sealed::save(path, magic, self)
    }

    /// The snapshot in `path` (`None`: no file).
    pub fn load(path: &Path, magic: &[u8; 8]) -> Result<Option<Self>, SealedError> {
        sealed::load(path, magic, MAX_SNAPSHOT_BYTES)
    }
}

/// `module`'s parameters, with their ids, as burnpack bytes.
pub(super) fn module_bytes<M: Module>(module: &M) -> Result<Vec<u8>, String> {
    let mut store = BurnpackStore::from_bytes(None);
    module
        .save_into(&mut store)
        .map_err(|e| format!("parameters: {e}"))?;
    store
        .get_bytes()
        .map(|bytes| bytes.to_vec())
        .map_err(|e| format!("parameters: {e}"))
}

/// `module` with the parameters (and their ids) of `bytes` ([`module_bytes`] of a module
/// of the same structure).
pub(super) fn load_module<M: Module>(mut module: M, bytes: Vec<u8>) -> Result<M, String> {
    let mut store = BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(bytes)));
    let applied = module
        .load_from(&mut store)
        .map_err(|e| format!("parameters: {e}"))?;
    if !applied.missing.is_empty() || !applied.errors.is_empty() {
        return Err(format!(
            "parameters: {} missing, {} unusable",
            applied.missing.len(),
            applied.errors.len()
        ));
    }
    Ok(module)
}
