//! The split fine-tuning application: one MiniLM top half per device, trained on the
//! cut tensors it sends.

use crate::app::{Admitted, CloudApp, RoundOutcome, SplitJob};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{MiniLm, ModelError};
use tandem_runtime::model::split::cloud::{Admission, CloudTrainer};
use tandem_runtime::model::split::position::checkpoint_due;
use tandem_runtime::model::split::snapshot::{self, TrainerSnapshot};
use tandem_runtime::model::split::{LrSchedule, TopTraining};
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
    /// How each device's top trains: a whole top each, or LoRA adapters on one shared
    /// frozen copy.
    pub top: TopTraining,
}

/// Snapshots kept per device: its checkpoint can lag the top's newest by one interval
/// (it writes its own after the cloud has answered the step that triggered the top's).
const SNAPSHOTS_KEPT: usize = 2;

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
    /// One top per admitted device, made at its Hello.
    tops: HashMap<NodeName, Slot>,
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
    trainer: Arc<Mutex<CloudTrainer>>,
}

impl SplitApp {
    /// Loads the model now, so a missing cache fails at start-up, not mid-run.
    pub fn new(settings: SplitSettings) -> Result<Self, ModelError> {
        let model = MiniLm::load(&settings.model_dir, &settings.backend.training_device())?;
        Ok(Self {
            settings,
            model,
            tops: HashMap::new(),
            freed: HashMap::new(),
            totals: Default::default(),
        })
    }

    /// A handle on the compute totals, readable while the server runs.
    pub fn totals(&self) -> Arc<Mutex<ComputeTotals>> {
        self.totals.clone()
    }

    /// What a worker needs to train `node`'s top.
    fn top_step(&self, node: &NodeName) -> Result<TopStep, String> {
        let slot = self
            .tops
            .get(node)
            .ok_or_else(|| format!("'{node}' sent activations without a split Hello"))?;
        Ok(TopStep {
            node: node.clone(),
            trainer: slot.trainer.clone(),
            updates: slot.updates.clone(),
            totals: self.totals.clone(),
            snapshots: self.snapshot_dir(node),
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
        if let Some(slot) = self.tops.get_mut(&hello.node)
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
            trainer: Arc::new(Mutex::new(trainer)),
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
        self.top_step(node)?.run(activations, tensor)
    }

    fn split_job(
        &mut self,
        node: &NodeName,
        activations: Box<Activations>,
        tensor: Vec<u8>,
    ) -> SplitJob {
        let step = self.top_step(node);
        Box::new(move || step?.run(&activations, &tensor))
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
