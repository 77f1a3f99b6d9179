//! A trainer's state between processes, for resuming a split run: the trained module's
//! parameters (burnpack, which keeps parameter ids, so the optimizer's state finds them
//! again), the optimizer's state, the codec's memory and where in the run it is. The
//! device writes one as its checkpoint; the cloud one per checkpoint of each device's
//! top. Both are sealed files (magic, postcard, checksum; written crash-safely).

use super::schedule::{LrSchedule, ScheduledAdamW};
use crate::codec::EncoderMemory;
use crate::sealed::{self, SealedError};
use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use std::ops::Deref;
use std::path::Path;

/// The device's checkpoint file's tag.
pub const DEVICE_MAGIC: &[u8; 8] = b"TNDMSPD1";
/// The tag of the cloud's snapshot of a device's top.
pub const TOP_MAGIC: &[u8; 8] = b"TNDMSPT1";

/// Larger files are refused unread: MiniLM's bottom at cut 5 with AdamW's two moments is
/// about 0.5 GB.
const MAX_SNAPSHOT_BYTES: u64 = 2 << 30;

/// One trainer's state at a step boundary of its run, as [`save`] writes it.
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
    /// The snapshot in `path` (`None`: no file).
    pub fn load(path: &Path, magic: &[u8; 8]) -> Result<Option<Self>, SealedError> {
        sealed::load(path, magic, MAX_SNAPSHOT_BYTES)
    }
}

/// What a snapshot says besides its module's and optimizer's bytes.
pub(super) struct SnapshotHead<'a> {
    pub run: u64,
    pub next_step: u64,
    pub settings: &'a str,
    pub encoder: &'a EncoderMemory,
}

/// Writes a trainer's snapshot to `path` under `magic`, crash-safely: `trained` is its
/// module and optimizer (`None`: a frozen bottom, with nothing of its own to keep). The
/// module's and then the optimizer's bytes are made only as they are written, so at most
/// one of them is held at a time (a bottom's are about 60 and 125 MB).
/// [`TrainerSnapshot::load`] reads it back.
pub(super) fn save<M: Module>(
    path: &Path,
    magic: &[u8; 8],
    head: SnapshotHead<'_>,
    trained: Option<(&M, &ScheduledAdamW)>,
) -> Result<(), String> {
    save_parts(
        path,
        magic,
        head,
        || trained.map_or_else(nothing, |(module, _)| module_bytes(module)),
        || trained.map_or_else(nothing, |(_, optimizer)| optimizer.state_bytes()),
    )
}

/// `module` with the parameters of a snapshot's `module_bytes`, and an optimizer at
/// `schedule` continuing its `optimizer_bytes` after `next_step` updates.
pub(super) fn restore<M: Module>(
    module: M,
    schedule: LrSchedule,
    next_step: u64,
    module_bytes: Vec<u8>,
    optimizer_bytes: Vec<u8>,
) -> Result<(M, ScheduledAdamW), String> {
    Ok((
        load_module(module, module_bytes)?,
        ScheduledAdamW::restore(schedule, next_step, optimizer_bytes)?,
    ))
}

/// [`save`] with the two large parts made by `module` and `optimizer`.
fn save_parts<M: Deref<Target = [u8]>, O: Deref<Target = [u8]>>(
    path: &Path,
    magic: &[u8; 8],
    head: SnapshotHead<'_>,
    module: impl FnOnce() -> Result<M, String>,
    optimizer: impl FnOnce() -> Result<O, String>,
) -> Result<(), String> {
    // The pieces in `TrainerSnapshot`'s field order, as postcard encodes it: a byte
    // vector is its length (a varint, as postcard encodes a `usize`) and its bytes.
    sealed::save_streamed(path, magic, |out| {
        out(&encoded(&(head.run, head.next_step, head.settings))?)?;
        let module = module().map_err(std::io::Error::other)?;
        out(&encoded(&module.len())?)?;
        out(&module)?;
        drop(module);
        let optimizer = optimizer().map_err(std::io::Error::other)?;
        out(&encoded(&optimizer.len())?)?;
        out(&optimizer)?;
        drop(optimizer);
        out(&encoded(head.encoder)?)
    })
    .map_err(|e| e.to_string())
}

fn encoded<T: Serialize + ?Sized>(value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(std::io::Error::other)
}

/// `module`'s parameters, with their ids, as burnpack bytes.
fn module_bytes<M: Module>(module: &M) -> Result<Bytes, String> {
    let mut store = BurnpackStore::from_bytes(None);
    module
        .save_into(&mut store)
        .map_err(|e| format!("parameters: {e}"))?;
    store.get_bytes().map_err(|e| format!("parameters: {e}"))
}

/// No bytes: what a frozen bottom keeps of its parameters and optimizer.
fn nothing() -> Result<Bytes, String> {
    Ok(Bytes::from_bytes_vec(Vec::new()))
}

/// `module` with the parameters (and their ids) of `bytes` ([`module_bytes`] of a module
/// of the same structure).
fn load_module<M: Module>(mut module: M, bytes: Vec<u8>) -> Result<M, String> {
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_written_piece_by_piece_reads_back_whole() {
        let dir = std::env::temp_dir().join(format!("tandem-snapshot-{}", std::process::id()));
        let path = dir.join("s.snap");
        let encoder = EncoderMemory {
            residual: vec![0.5; 3],
            warm: Some((2, 3, 1, vec![1.0, 2.0, 3.0])),
            steps: 9,
        };
        let head = SnapshotHead {
            run: 0xfeed,
            next_step: 300,
            settings: "cut 2",
            encoder: &encoder,
        };
        let module: Vec<u8> = (0..=255).collect();
        save_parts(
            &path,
            TOP_MAGIC,
            head,
            || Ok(module.clone()),
            || Ok(vec![7; 200]),
        )
        .unwrap();
        let read = TrainerSnapshot::load(&path, TOP_MAGIC).unwrap().unwrap();
        assert_eq!(
            read,
            TrainerSnapshot {
                run: 0xfeed,
                next_step: 300,
                settings: "cut 2".into(),
                module,
                optimizer: vec![7; 200],
                encoder,
            }
        );
        // Another tag is refused; a failing part leaves the old file in place.
        assert!(TrainerSnapshot::load(&path, DEVICE_MAGIC).is_err());
        let failed = save_parts(
            &path,
            TOP_MAGIC,
            SnapshotHead {
                run: 1,
                next_step: 1,
                settings: "",
                encoder: &EncoderMemory::default(),
            },
            || Err::<Vec<u8>, _>("no parameters".into()),
            || Ok(Vec::<u8>::new()),
        );
        assert!(failed.unwrap_err().contains("no parameters"));
        assert_eq!(
            TrainerSnapshot::load(&path, TOP_MAGIC)
                .unwrap()
                .unwrap()
                .run,
            0xfeed
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
