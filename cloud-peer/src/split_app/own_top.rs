//! Per-device tops (`--top per-device` and `lora:R`): each trained on a worker under its
//! own lock, snapshotted where its device checkpoints, so a device (or this cloud) that
//! restarts resumes it.

use super::{Built, ComputeTotals, Slot, SlotTop, SplitApp, shelve};
use crate::app::{AdmitJob, Admitted, Refused};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tandem_runtime::model::split::cloud::{Admission, CloudTrainer};
use tandem_runtime::model::split::position::checkpoint_due;
use tandem_runtime::model::split::snapshot::{self, TrainerSnapshot};
use tandem_runtime::wire::{Activations, CutGradient, NodeName};
use tracing::{info, warn};

/// Snapshots kept per device: its checkpoint can lag the top's newest by one interval
/// (it writes its own after the cloud has answered the step that triggered the top's).
const SNAPSHOTS_KEPT: usize = 2;

impl SplitApp {
    /// What a worker needs to train `node`'s own top.
    pub(super) fn top_step(&self, node: &NodeName) -> Result<TopStep, String> {
        let slot = self.slot(node)?;
        let SlotTop::Own(trainer, updates) = &slot.top else {
            return Err(format!("'{node}' trains the shared top"));
        };
        Ok(TopStep {
            node: node.clone(),
            trainer: trainer.clone(),
            updates: updates.clone(),
            totals: self.totals.clone(),
            snapshots: self.snapshot_dir(node),
        })
    }

    /// Admits a device to a top of its own. The same process reconnecting keeps its top,
    /// and so does a restarted one resuming the run exactly where the top is; a new run
    /// or request gets a fresh top, and a restart at a later step the top snapshotted
    /// there: made (and the snapshot read) on the admission thread.
    pub(super) fn own_job(
        &mut self,
        node: &NodeName,
        admission: Admission,
        admitted: Admitted,
    ) -> AdmitJob {
        let (plan, run_settings) = (admission.plan, admission.run_settings());
        if let Some(slot) = self.tops.get_mut(node)
            && let SlotTop::Own(_, updates) = &slot.top
            && slot.run_settings == run_settings
            && (slot.process == plan.process || updates.load(Ordering::Acquire) == plan.start_step)
        {
            slot.process = plan.process;
            return AdmitJob::Decided(Ok(admitted));
        }
        let (model, device) = (self.model.clone(), self.settings.backend.training_device());
        let (schedule, seed) = (self.settings.schedule, self.settings.seed);
        let (training, code_cache) = (self.settings.top, self.settings.code_cache_bytes);
        let snapshots = self.snapshot_dir(node);
        let (shelf, node) = (self.built.clone(), node.clone());
        AdmitJob::Build(Box::new(move || {
            let build = || {
                // A restart at a later step needs the snapshot there: read it first.
                let saved = (plan.start_step > 0)
                    .then(|| saved_top(snapshots.as_deref(), plan.run, plan.start_step))
                    .transpose()?;
                let mut trainer =
                    CloudTrainer::new(model, &device, admission, training, schedule, seed)?;
                if let Some(saved) = saved {
                    trainer = trainer.resumed(saved)?;
                    info!(%node, step = plan.start_step, "resumed the top from its snapshot");
                }
                Ok(Built::Own(Box::new(trainer.with_code_cache(code_cache))))
            };
            let built = build();
            shelve(&shelf, node, built);
        }))
    }

    /// Gives `node` the top `trainer` (made for its admission), in place of any it had.
    pub(super) fn install_own(
        &mut self,
        node: &NodeName,
        trainer: CloudTrainer,
        admitted: Admitted,
    ) -> Admitted {
        let admission = trainer.admission();
        let trainer_updates = trainer.updates();
        let slot = Slot {
            run_settings: admission.run_settings(),
            process: admission.plan.process,
            top: SlotTop::Own(
                Arc::new(Mutex::new(trainer)),
                Arc::new(AtomicU64::new(trainer_updates)),
            ),
        };
        self.freed.remove(node);
        self.tops.insert(node.clone(), slot);
        admitted
    }

    /// The directory of `node`'s snapshots.
    fn snapshot_dir(&self, node: &NodeName) -> Option<PathBuf> {
        Some(self.settings.state_dir.as_ref()?.join(node.as_str()))
    }
}

/// The top of run `run` as it was after `step` steps, from its snapshot in `dir` (a
/// device's snapshot directory; `None`: this cloud keeps none). The error is one line
/// for the device's operator.
fn saved_top(dir: Option<&Path>, run: u64, step: u64) -> Result<TrainerSnapshot, Refused> {
    let missing = || {
        Refused::ResumeRefused(format!(
            "cannot resume run {run:016x} at step {step}: this cloud holds no top of it at that step (it restarted since the last snapshot, or never trained this run): go back to the checkpoint, or start a new run"
        ))
    };
    let path = dir.ok_or_else(missing)?.join(snapshot_name(run, step));
    TrainerSnapshot::load(&path, snapshot::TOP_MAGIC)
        .map_err(|e| Refused::Unserved(format!("cannot resume: {e}")))?
        .ok_or_else(missing)
}

/// Writes `trainer` to the snapshot directory `dir` and keeps the newest
/// [`SNAPSHOTS_KEPT`] of its run (older runs' go).
fn snapshot_top(dir: &Path, trainer: &CloudTrainer) -> Result<(), String> {
    let run = trainer.admission().plan.run;
    trainer.save_snapshot(&dir.join(snapshot_name(run, trainer.updates())))?;
    let mut ours = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        match parse_snapshot_name(&name) {
            Some((other, step)) if other == run => ours.push((step, entry.path())),
            Some(_) => {
                let _ = std::fs::remove_file(entry.path());
            }
            None => {}
        }
    }
    ours.sort_unstable();
    for (_, old) in ours.iter().rev().skip(SNAPSHOTS_KEPT) {
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}

/// What a worker needs to train one device's top.
pub(super) struct TopStep {
    node: NodeName,
    trainer: Arc<Mutex<CloudTrainer>>,
    updates: Arc<AtomicU64>,
    totals: Arc<Mutex<ComputeTotals>>,
    /// Where its snapshots go (`None`: none).
    snapshots: Option<PathBuf>,
}

impl TopStep {
    /// Trains the top on one step and snapshots it where the device checkpoints.
    pub(super) fn run(
        &self,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        let node = &self.node;
        let mut trainer = self
            .trainer
            .lock()
            .map_err(|_| format!("the top of '{node}' failed in an earlier step"))?;
        let started = Instant::now();
        let before = trainer.updates();
        let reply = trainer.step(activations, tensor);
        if activations.train
            && let Ok(mut totals) = self.totals.lock()
        {
            totals.steps += 1;
            totals.train += started.elapsed();
        }
        let (done, plan) = (trainer.updates(), trainer.admission().plan);
        self.updates.store(done, Ordering::Release);
        // The device's rule, so its resume finds the top where its checkpoint is.
        let checkpoint = plan.checkpoint_every > 0
            && done != before
            && checkpoint_due(done, plan.checkpoint_every, plan.steps);
        if checkpoint
            && let Some(dir) = &self.snapshots
            && let Err(e) = snapshot_top(dir, &trainer)
        {
            // The device goes on; only a resume at this step will be refused.
            warn!(%node, step = done, "cannot snapshot the top: {e}");
        }
        reply
    }
}

/// A top snapshot's file name: its run and step.
fn snapshot_name(run: u64, step: u64) -> String {
    format!("top-{run:016x}-{step}.snap")
}

/// The run and step of a [`snapshot_name`].
fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let (run, step) = name
        .strip_prefix("top-")?
        .strip_suffix(".snap")?
        .split_once('-')?;
    Some((u64::from_str_radix(run, 16).ok()?, step.parse().ok()?))
}
