//! The top every device trains (`--top shared`, SplitFed): made at the first Hello (or
//! from its snapshot, so a restarted cloud goes on where it was), each device holding a
//! link of its own; the steps the hub hands over together train it as one batch.

use super::{Built, ComputeTotals, Slot, SlotTop, SplitApp, shelve};
use crate::app::{AdmitJob, Admitted, BatchJob, ReadyStep, Refused, StepReply};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tandem_runtime::model::split::StepLink;
use tandem_runtime::model::split::cloud::Admission;
use tandem_runtime::model::split::shared_top::SharedTop;
use tandem_runtime::model::split::snapshot::{self, TrainerSnapshot};
use tandem_runtime::wire::NodeName;
use tracing::{info, warn};

/// A shared top is snapshotted every this many updates (and a restarted cloud goes on
/// from the newest).
const SHARED_SNAPSHOT_EVERY: u64 = 100;

/// The shared top's snapshot, in the state directory.
const SHARED_SNAPSHOT: &str = "shared-top.snap";

impl SplitApp {
    /// Admits a device to the shared top, making the top first (on the admission
    /// thread) at the first Hello.
    pub(super) fn shared_job(
        &mut self,
        node: &NodeName,
        admission: Admission,
        admitted: Admitted,
    ) -> AdmitJob {
        if self.shared.is_some() {
            return AdmitJob::Decided(self.admit_shared(node, admission, admitted));
        }
        let (model, device) = (self.model.clone(), self.settings.backend.training_device());
        let (schedule, seed) = (self.settings.schedule, self.settings.seed);
        let saved = self
            .settings
            .state_dir
            .as_ref()
            .map(|d| d.join(SHARED_SNAPSHOT));
        let (shelf, node) = (self.built.clone(), node.clone());
        AdmitJob::Build(Box::new(move || {
            let top = SharedTop::new(
                model,
                &device,
                admission.cut,
                admission.form,
                schedule,
                seed,
            )
            .map(|top| resume_shared(top, saved.as_deref()));
            let built = top.map(|top| Built::Shared(Box::new(top)));
            shelve(&shelf, node, built.map_err(Refused::from));
        }))
    }

    /// Makes `top` the shared top, unless another admission made one meanwhile.
    pub(super) fn install_shared(&mut self, top: SharedTop) {
        if self.shared.is_none() {
            self.shared = Some((top.shape(), Arc::new(Mutex::new(top))));
        }
    }

    /// Admits a device to the shared top: same cut and form as every other device; its
    /// link kept across reconnects of the same run. A device that resumes trains the
    /// shared top as it now is (the top is the cloud's, not its run's).
    pub(super) fn admit_shared(
        &mut self,
        node: &NodeName,
        admission: Admission,
        admitted: Admitted,
    ) -> Result<Admitted, Refused> {
        // The shape, not the top: a Hello never waits for a batch to train.
        let (shape, _) = self
            .shared
            .as_ref()
            .ok_or("this cloud has no shared top yet")?;
        shape.serves(&admission)?;
        let (run_settings, process) = (admission.run_settings(), admission.plan.process);
        if let Some(slot) = self.tops.get_mut(node)
            && slot.run_settings == run_settings
            && matches!(slot.top, SlotTop::Shared(_))
        {
            slot.process = process;
            return Ok(admitted);
        }
        let link = StepLink::new(admission)?.with_code_cache(self.settings.code_cache_bytes);
        let slot = Slot {
            run_settings,
            process,
            top: SlotTop::Shared(Arc::new(Mutex::new(link))),
        };
        self.freed.remove(node);
        self.tops.insert(node.clone(), slot);
        Ok(admitted)
    }

    /// Steps of devices training the shared top, as one job: one batch.
    pub(super) fn shared_batch(&self, steps: Vec<ReadyStep>) -> BatchJob {
        let mut refused: Vec<(NodeName, StepReply)> = Vec::new();
        // A device is admitted to the shared top only once the top exists.
        let Some((_, shared)) = &self.shared else {
            let none = "this cloud has no shared top".to_string();
            refused.extend(steps.into_iter().map(|s| (s.node, Err(none.clone()))));
            return Box::new(move || refused);
        };
        let mut taken = Vec::new();
        for step in steps {
            match self.slot(&step.node).map(|slot| &slot.top) {
                Ok(SlotTop::Shared(link)) => {
                    let link = link.clone();
                    taken.push((step, link));
                }
                Ok(SlotTop::Own(..)) => {
                    let reason = format!("'{}' trains a top of its own", step.node);
                    refused.push((step.node, Err(reason)));
                }
                Err(reason) => refused.push((step.node, Err(reason))),
            }
        }
        let (shared, totals) = (shared.clone(), self.totals.clone());
        let state_dir = self.settings.state_dir.clone();
        Box::new(move || {
            refused.extend(train_shared(&shared, taken, &totals, state_dir.as_deref()));
            refused
        })
    }
}

/// `top` resumed from the snapshot at `saved` when there is one of its cut and form (one
/// of another stays on disk until this top's first).
fn resume_shared(mut top: SharedTop, saved: Option<&Path>) -> SharedTop {
    let Some(path) = saved else {
        return top;
    };
    let resumed = TrainerSnapshot::load(path, snapshot::TOP_MAGIC)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|saved| saved.map(|saved| top.resume(saved)).transpose());
    match resumed {
        Ok(Some(())) => info!(
            updates = top.updates(),
            "resumed the shared top from its snapshot"
        ),
        Ok(None) => {}
        Err(e) => warn!("a fresh shared top: {e}"),
    }
    top
}

/// Puts `top` back to its snapshot in `state_dir`; returns the updates it holds.
fn reload(top: &mut SharedTop, state_dir: Option<&Path>) -> Result<u64, String> {
    let dir = state_dir.ok_or("this cloud keeps no snapshots (no state directory)")?;
    let path = dir.join(SHARED_SNAPSHOT);
    let saved = TrainerSnapshot::load(&path, snapshot::TOP_MAGIC)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .ok_or_else(|| format!("no snapshot at {} yet", path.display()))?;
    top.resume(saved)?;
    Ok(top.updates())
}

/// Trains `shared` on `steps` as one batch (each with its device's link), adds the training steps to `totals`, and snapshots the top into
/// `state_dir` every [`SHARED_SNAPSHOT_EVERY`] updates.
fn train_shared(
    shared: &Mutex<SharedTop>,
    steps: Vec<(ReadyStep, Arc<Mutex<StepLink>>)>,
    totals: &Mutex<ComputeTotals>,
    state_dir: Option<&Path>,
) -> Vec<(NodeName, StepReply)> {
    let failed = |steps: Vec<(ReadyStep, _)>, reason: &str| {
        steps
            .into_iter()
            .map(|(s, ..)| (s.node, Err(reason.to_string())))
            .collect()
    };
    let mut top = match shared.lock() {
        Ok(top) => top,
        // A panic mid-step may have left the top half updated: it goes back to its last
        // snapshot before anyone trains it again.
        Err(poisoned) => {
            let mut top = poisoned.into_inner();
            match reload(&mut top, state_dir) {
                Ok(updates) => {
                    warn!(
                        updates,
                        "the shared top failed in a step: reloaded its snapshot"
                    );
                    shared.clear_poison();
                    top
                }
                Err(reason) => {
                    let reason = format!(
                        "the shared top failed in an earlier step and cannot be reloaded: {reason}"
                    );
                    return failed(steps, &reason);
                }
            }
        }
    };
    let held: Vec<Arc<Mutex<StepLink>>> = steps.iter().map(|(_, link)| link.clone()).collect();
    let mut links = Vec::with_capacity(held.len());
    for link in &held {
        match link.lock() {
            Ok(link) => links.push(link),
            Err(_) => return failed(steps, "a device's link failed in an earlier step"),
        }
    }
    let started = Instant::now();
    let before = top.updates();
    let batch = links
        .iter_mut()
        .zip(&steps)
        .map(|(link, (step, ..))| (&mut **link, &*step.activations, step.tensor.as_slice()))
        .collect();
    let replies = top.step_batch(batch);
    let trained = steps.iter().filter(|(s, ..)| s.activations.train).count() as u64;
    if trained > 0
        && let Ok(mut totals) = totals.lock()
    {
        totals.steps += trained;
        totals.train += started.elapsed();
    }
    drop(links);
    let done = top.updates();
    if done != before
        && done % SHARED_SNAPSHOT_EVERY == 0
        && let Some(dir) = state_dir
    {
        let saved = std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))
            .and_then(|()| top.save_snapshot(&dir.join(SHARED_SNAPSHOT)));
        if let Err(e) = saved {
            warn!(step = done, "cannot snapshot the shared top: {e}");
        }
    }
    steps
        .into_iter()
        .zip(replies)
        .map(|((step, ..), reply)| (step.node, reply))
        .collect()
}
