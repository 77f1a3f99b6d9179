//! The split fine-tuning application: MiniLM top halves trained on the cut tensors the
//! devices send: one per device (whole, or LoRA adapters on a shared frozen copy), or
//! one that every device trains, its steps batched.

use crate::app::{Admitted, BatchJob, CloudApp, ReadyStep, RoundOutcome, SplitJob, StepReply};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{MiniLm, ModelError};
use tandem_runtime::model::split::cloud::{Admission, CloudTrainer};
use tandem_runtime::model::split::position::checkpoint_due;
use tandem_runtime::model::split::shared_top::SharedTop;
use tandem_runtime::model::split::snapshot::{self, TrainerSnapshot};
use tandem_runtime::model::split::{LrSchedule, StepLink, TopTraining};
use tandem_runtime::session::fl::Assignment;
use tandem_runtime::session::step_limits::StepCaps;
use tandem_runtime::wire::{Activations, Capabilities, CutGradient, Hello, NodeName};
use tracing::{info, warn};

/// How the cloud trains the tops.
#[derive(Clone, Debug)]
pub struct SplitSettings {
    /// Where all-MiniLM-L6-v2 is cached.
    pub model_dir: PathBuf,
    /// The CPU backend (a GPU backend arrives with the `cuda` feature).
    pub backend: ComputeBackend,
    /// Learning rate of the top's optimizer.
    pub schedule: LrSchedule,
    /// Seeds each top's classifier head.
    pub seed: u64,
    /// Where each device's top is snapshotted at its checkpoints, so a device (or this
    /// cloud) that restarts resumes it; `None`: no snapshots, a restarted device
    /// resumes only a top still held in memory at its step.
    pub state_dir: Option<PathBuf>,
    /// Bytes of a frozen bottom's codes each device's top may keep for it (EcoFed; 0:
    /// none).
    pub code_cache_bytes: usize,
    /// The largest step any device may declare at Hello.
    pub step_caps: StepCaps,
    /// How each device's top trains: a whole top each, LoRA adapters on one shared
    /// frozen copy, or one top for all.
    pub top: TopTraining,
    /// A shared top trains the steps that are ready together as one batch of up to this
    /// many padded tokens (sequences x the longest); 0: one step at a time.
    pub batch_tokens: u64,
}

/// Snapshots kept per device: its checkpoint can lag the top's newest by one interval
/// (it writes its own after the cloud has answered the step that triggered the top's).
const SNAPSHOTS_KEPT: usize = 2;

/// A shared top is snapshotted every this many updates (and a restarted cloud goes on
/// from the newest).
const SHARED_SNAPSHOT_EVERY: u64 = 100;

/// The shared top's snapshot, in the state directory.
const SHARED_SNAPSHOT: &str = "shared-top.snap";

/// Time the cloud spent computing, for the step-time split.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ComputeTotals {
    /// Training steps answered.
    pub steps: u64,
    /// Time in those steps (decode, top forward and backward, encode).
    pub train: Duration,
}

/// Serves split fine-tuning of all-MiniLM-L6-v2.
pub struct SplitApp {
    settings: SplitSettings,
    /// The whole encoder, loaded once on the training device; each device's top is
    /// cut from a clone.
    model: MiniLm,
    /// One top (or, for a shared top, one link) per admitted device, made at its Hello.
    tops: HashMap<NodeName, Slot>,
    /// The top every device trains (`--top shared`), made at the first Hello.
    shared: Option<Arc<Mutex<SharedTop>>>,
    /// Devices whose tops were freed (idle, or failed), and the process they served: that
    /// process is refused (its top is gone); a restart resumes from a snapshot.
    freed: HashMap<NodeName, u64>,
    totals: Arc<Mutex<ComputeTotals>>,
}

/// An admitted device's top: trained on a worker thread, step by step, under its lock.
struct Slot {
    /// What the top was made for ([`Admission::run_settings`]).
    run_settings: String,
    /// The device process it trains for.
    process: u64,
    /// Steps it has trained, as its worker last left it (read without the lock).
    updates: Arc<AtomicU64>,
    top: SlotTop,
}

/// What a device's steps train.
enum SlotTop {
    /// Its own top.
    Own(Arc<Mutex<CloudTrainer>>),
    /// The shared top, through its own link.
    Shared(Arc<Mutex<StepLink>>),
}

impl SplitApp {
    /// Loads the model now, so a missing cache fails at start-up, not mid-run.
    pub fn new(settings: SplitSettings) -> Result<Self, ModelError> {
        let model = MiniLm::load(&settings.model_dir, &settings.backend.training_device())?;
        Ok(Self {
            settings,
            model,
            tops: HashMap::new(),
            shared: None,
            freed: HashMap::new(),
            totals: Default::default(),
        })
    }

    /// A handle on the compute totals, readable while the server runs.
    pub fn totals(&self) -> Arc<Mutex<ComputeTotals>> {
        self.totals.clone()
    }

    /// `node`'s slot. The error is one line for the device's operator.
    fn slot(&self, node: &NodeName) -> Result<&Slot, String> {
        self.tops
            .get(node)
            .ok_or_else(|| format!("'{node}' sent activations without a split Hello"))
    }

    /// What a worker needs to train `node`'s own top.
    fn top_step(&self, node: &NodeName) -> Result<TopStep, String> {
        let slot = self.slot(node)?;
        let SlotTop::Own(trainer) = &slot.top else {
            return Err(format!("'{node}' trains the shared top"));
        };
        Ok(TopStep {
            node: node.clone(),
            trainer: trainer.clone(),
            updates: slot.updates.clone(),
            totals: self.totals.clone(),
            snapshots: self.snapshot_dir(node),
        })
    }

    /// The shared top, made now from its snapshot (if the state directory has one of
    /// the same cut and form) or fresh for `admission`'s cut and form.
    fn shared_top(&mut self, admission: &Admission) -> Result<Arc<Mutex<SharedTop>>, String> {
        if let Some(shared) = &self.shared {
            return Ok(shared.clone());
        }
        let device = self.settings.backend.training_device();
        let (schedule, seed) = (self.settings.schedule, self.settings.seed);
        let mut top = SharedTop::new(
            self.model.clone(),
            &device,
            admission.cut,
            admission.form,
            schedule,
            seed,
        )?;
        let saved = self
            .settings
            .state_dir
            .as_ref()
            .map(|d| d.join(SHARED_SNAPSHOT));
        if let Some(path) = saved {
            match TrainerSnapshot::load(&path, snapshot::TOP_MAGIC) {
                Ok(Some(saved)) => match top.resume(saved, schedule) {
                    Ok(resumed) => {
                        info!(
                            updates = resumed.updates(),
                            "resumed the shared top from its snapshot"
                        );
                        top = resumed;
                    }
                    // The old top stays on disk until this one's first snapshot.
                    Err(other) => {
                        warn!("a fresh shared top: {other}");
                        top = SharedTop::new(
                            self.model.clone(),
                            &device,
                            admission.cut,
                            admission.form,
                            schedule,
                            seed,
                        )?;
                    }
                },
                Ok(None) => {}
                Err(e) => warn!("a fresh shared top: cannot read {}: {e}", path.display()),
            }
        }
        let shared = Arc::new(Mutex::new(top));
        self.shared = Some(shared.clone());
        Ok(shared)
    }

    /// Admits a device to the shared top: same cut and form as every other device; its
    /// link kept across reconnects of the same run. A device that resumes trains the
    /// shared top as it now is (the top is the cloud's, not its run's).
    fn admit_shared(
        &mut self,
        node: &NodeName,
        admission: Admission,
        admitted: Admitted,
    ) -> Result<Admitted, String> {
        let shared = self.shared_top(&admission)?;
        shared
            .lock()
            .map_err(|_| "the shared top failed in an earlier step".to_string())?
            .serves(&admission)?;
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
            updates: Arc::new(AtomicU64::new(0)),
            top: SlotTop::Shared(Arc::new(Mutex::new(link))),
        };
        self.freed.remove(node);
        self.tops.insert(node.clone(), slot);
        Ok(admitted)
    }

    /// Steps of devices training the shared top, as one job: one batch.
    fn shared_batch(&self, steps: Vec<ReadyStep>) -> BatchJob {
        let mut refused = Vec::new();
        let mut taken = Vec::new();
        for step in steps {
            match self.slot(&step.node) {
                Ok(Slot {
                    top: SlotTop::Shared(link),
                    updates,
                    ..
                }) => {
                    let (link, updates) = (link.clone(), updates.clone());
                    taken.push((step, link, updates));
                }
                Ok(_) => {
                    let reason = format!("'{}' trains a top of its own", step.node);
                    refused.push((step.node, Err(reason)));
                }
                Err(reason) => refused.push((step.node, Err(reason))),
            }
        }
        let (shared, totals) = (self.shared.clone(), self.totals.clone());
        let state_dir = self.settings.state_dir.clone();
        Box::new(move || {
            let Some(shared) = shared else {
                let none = "this cloud has no shared top".to_string();
                refused.extend(taken.into_iter().map(|(s, ..)| (s.node, Err(none.clone()))));
                return refused;
            };
            refused.extend(train_shared(&shared, taken, &totals, state_dir.as_deref()));
            refused
        })
    }

    /// The directory of `node`'s snapshots.
    fn snapshot_dir(&self, node: &NodeName) -> Option<PathBuf> {
        Some(self.settings.state_dir.as_ref()?.join(node.as_str()))
    }

    /// `node`'s top of run `run` as it was after `step` steps, from its snapshot. The
    /// error is one line for the device's operator.
    fn saved_top(&self, node: &NodeName, run: u64, step: u64) -> Result<TrainerSnapshot, String> {
        let missing = || {
            format!(
                "cannot resume run {run:016x} at step {step}: this cloud holds no top of it at that step (start a new run without --resume)"
            )
        };
        let path = self
            .snapshot_dir(node)
            .ok_or_else(missing)?
            .join(snapshot_name(run, step));
        TrainerSnapshot::load(&path, snapshot::TOP_MAGIC)
            .map_err(|e| format!("cannot resume: {e}"))?
            .ok_or_else(missing)
    }
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
struct TopStep {
    node: NodeName,
    trainer: Arc<Mutex<CloudTrainer>>,
    updates: Arc<AtomicU64>,
    totals: Arc<Mutex<ComputeTotals>>,
    /// Where its snapshots go (`None`: none).
    snapshots: Option<PathBuf>,
}

impl TopStep {
    /// Trains the top on one step and snapshots it where the device checkpoints.
    fn run(
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

/// Trains `shared` on `steps` as one batch (each with its device's link and count of
/// trained steps), adds the training steps to `totals`, and snapshots the top into
/// `state_dir` every [`SHARED_SNAPSHOT_EVERY`] updates.
fn train_shared(
    shared: &Mutex<SharedTop>,
    steps: Vec<(ReadyStep, Arc<Mutex<StepLink>>, Arc<AtomicU64>)>,
    totals: &Mutex<ComputeTotals>,
    state_dir: Option<&Path>,
) -> Vec<(NodeName, StepReply)> {
    let failed = |steps: Vec<(ReadyStep, _, _)>, reason: &str| {
        steps
            .into_iter()
            .map(|(s, ..)| (s.node, Err(reason.to_string())))
            .collect()
    };
    let Ok(mut top) = shared.lock() else {
        return failed(steps, "the shared top failed in an earlier step");
    };
    let held: Vec<Arc<Mutex<StepLink>>> = steps.iter().map(|(_, link, _)| link.clone()).collect();
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
    for (link, (_, _, updates)) in links.iter().zip(&steps) {
        updates.store(link.trained(), Ordering::Release);
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

/// The reply of a batch of one step.
fn only_reply(mut replies: Vec<(NodeName, StepReply)>) -> StepReply {
    replies.pop().map_or_else(
        || Err("the shared top gave no reply".into()),
        |(_, reply)| reply,
    )
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

impl CloudApp for SplitApp {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT.union(Capabilities::RESUME)
    }

    fn admit(&mut self, hello: &Hello) -> Result<Admitted, String> {
        if !hello.capabilities.contains(Capabilities::SPLIT) {
            // A probe or an FL client: nothing to check.
            return Ok(Admitted::default());
        }
        let admission = Admission::check(hello, self.settings.step_caps)?;
        let plan = admission.plan;
        let admitted = Admitted {
            steps: Some(admission.step_limits()),
        };
        // The same process reconnecting keeps its top, and so does a restarted one
        // resuming the run exactly where the top is; a new run or request gets a fresh
        // top, and a restart at an earlier step the top snapshotted there.
        let run_settings = admission.run_settings();
        if self.freed.get(&hello.node) == Some(&plan.process) {
            return Err("this cloud freed the top of this device process (it was away too long, or its step failed): restart the device with --resume to continue from its checkpoint".into());
        }
        info!(node = %hello.node, cut = admission.cut, form = ?admission.form, width = admission.width(), gradient = ?admission.gradient, run = admission.plan.run, start_step = admission.plan.start_step, "admitted split session");
        if self.settings.top == TopTraining::Shared {
            return self.admit_shared(&hello.node, admission, admitted);
        }
        if let Some(slot) = self.tops.get_mut(&hello.node)
            && matches!(slot.top, SlotTop::Own(_))
            && slot.run_settings == run_settings
            && (slot.process == plan.process
                || slot.updates.load(Ordering::Acquire) == plan.start_step)
        {
            slot.process = plan.process;
            return Ok(admitted);
        }
        let device = self.settings.backend.training_device();
        let (schedule, seed) = (self.settings.schedule, self.settings.seed);
        let training = self.settings.top;
        let trainer = if plan.start_step == 0 {
            CloudTrainer::new(
                self.model.clone(),
                &device,
                admission,
                training,
                schedule,
                seed,
            )?
        } else {
            let saved = self.saved_top(&hello.node, plan.run, plan.start_step)?;
            info!(node = %hello.node, step = plan.start_step, "resumed the top from its snapshot");
            CloudTrainer::resume(
                self.model.clone(),
                &device,
                admission,
                training,
                schedule,
                seed,
                saved,
            )?
        };
        let trainer = trainer.with_code_cache(self.settings.code_cache_bytes);
        let slot = Slot {
            run_settings,
            process: plan.process,
            updates: Arc::new(AtomicU64::new(trainer.updates())),
            top: SlotTop::Own(Arc::new(Mutex::new(trainer))),
        };
        self.freed.remove(&hello.node);
        self.tops.insert(hello.node.clone(), slot);
        Ok(admitted)
    }

    fn split_step(
        &mut self,
        node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        if self.settings.top == TopTraining::Shared {
            let step = ReadyStep {
                node: node.clone(),
                activations: Box::new(activations.clone()),
                tensor: tensor.to_vec(),
            };
            return only_reply(self.shared_batch(vec![step])());
        }
        self.top_step(node)?.run(activations, tensor)
    }

    fn split_job(
        &mut self,
        node: &NodeName,
        activations: Box<Activations>,
        tensor: Vec<u8>,
    ) -> SplitJob {
        if self.settings.top == TopTraining::Shared {
            let job = self.shared_batch(vec![ReadyStep {
                node: node.clone(),
                activations,
                tensor,
            }]);
            return Box::new(move || only_reply(job()));
        }
        let step = self.top_step(node);
        Box::new(move || step?.run(&activations, &tensor))
    }

    fn batch_tokens(&self) -> u64 {
        match self.settings.top {
            TopTraining::Shared => self.settings.batch_tokens,
            _ => 0,
        }
    }

    fn split_batch(&mut self, steps: Vec<ReadyStep>) -> BatchJob {
        if self.settings.top == TopTraining::Shared {
            return self.shared_batch(steps);
        }
        crate::app::jobs_in_turn(self, steps)
    }

    fn forget(&mut self, node: &NodeName) {
        if let Some(slot) = self.tops.remove(node) {
            info!(%node, "freed its top");
            self.freed.insert(node.clone(), slot.process);
        }
    }

    fn round_tasks(&mut self, _round: u64, _participants: &[NodeName]) -> Option<Vec<Assignment>> {
        None
    }

    fn round_ended(&mut self, _outcome: RoundOutcome) {}
}
