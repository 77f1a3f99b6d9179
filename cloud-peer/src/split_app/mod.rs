//! The split fine-tuning application: MiniLM top halves trained on the cut tensors the
//! devices send: one per device (whole, or LoRA adapters on a shared frozen copy), or
//! one that every device trains, its steps batched.

use crate::app::{AdmitJob, Admitted, BatchJob, CloudApp, ReadyStep, Refused, SplitJob, StepReply};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{MiniLm, ModelError};
use tandem_runtime::model::split::cloud::{Admission, CloudTrainer};
use tandem_runtime::model::split::shared_top::{SharedTop, TopShape};
use tandem_runtime::model::split::{LrSchedule, StepLink, TopTraining};
use tandem_runtime::session::step_limits::StepCaps;
use tandem_runtime::wire::{Activations, Capabilities, CutGradient, Hello, NodeName};
use tracing::info;

mod own_top;
mod shared;

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
    /// The top every device trains (`--top shared`), made at the first Hello, and where
    /// it sits (read at each Hello without waiting for the top's lock).
    shared: Option<(TopShape, Arc<Mutex<SharedTop>>)>,
    /// Devices whose tops were freed (idle, or failed), and the process they served: that
    /// process is refused (its top is gone); a restart resumes from a snapshot.
    freed: HashMap<NodeName, u64>,
    totals: Arc<Mutex<ComputeTotals>>,
    /// What admissions built on the admission thread, for [`CloudApp::admit_built`].
    built: Shelf,
}

/// A top built off the hub for an admission.
enum Built {
    /// The shared top, made at the first Hello.
    Shared(Box<SharedTop>),
    /// A device's own top.
    Own(Box<CloudTrainer>),
}

/// Each device's top built off the hub (or why it could not be), until the hub installs
/// it.
type Shelf = Arc<Mutex<HashMap<NodeName, Result<Built, Refused>>>>;

/// Puts what an admission's work built for `node` on `shelf`.
fn shelve(shelf: &Shelf, node: NodeName, built: Result<Built, Refused>) {
    shelf
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(node, built);
}

/// An admitted device's top: trained on a worker thread, step by step, under its lock.
struct Slot {
    /// What the top was made for ([`Admission::run_settings`]).
    run_settings: String,
    /// The device process it trains for.
    process: u64,
    top: SlotTop,
}

/// What a device's steps train.
enum SlotTop {
    /// Its own top, and the steps it has trained as its worker last left them (read
    /// without the lock).
    Own(Arc<Mutex<CloudTrainer>>, Arc<AtomicU64>),
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
            built: Shelf::default(),
        })
    }

    /// A handle on the compute totals, readable while the server runs.
    pub fn totals(&self) -> Arc<Mutex<ComputeTotals>> {
        self.totals.clone()
    }

    /// What `hello` asks, checked against the caps and the tops this cloud freed: `None`
    /// for a device that asks no split session (a probe, an FL client).
    fn check(&self, hello: &Hello) -> Result<Option<(Admission, Admitted)>, Refused> {
        if !hello.capabilities.contains(Capabilities::SPLIT) {
            return Ok(None);
        }
        let admission = Admission::check(hello, self.settings.step_caps)?;
        if self.freed.get(&hello.node) == Some(&admission.plan.process) {
            return Err(Refused::ResumeRefused("this cloud freed the top of this device process (it was away too long, or its step failed): go back to the checkpoint (restart the device with --resume)".into()));
        }
        let admitted = Admitted {
            steps: Some(admission.step_limits()),
            ..Admitted::default()
        };
        Ok(Some((admission, admitted)))
    }

    /// `node`'s slot. The error is one line for the device's operator.
    fn slot(&self, node: &NodeName) -> Result<&Slot, String> {
        self.tops
            .get(node)
            .ok_or_else(|| format!("'{node}' sent activations without a split Hello"))
    }
}

/// The reply of a batch of one step.
fn only_reply(mut replies: Vec<(NodeName, StepReply)>) -> StepReply {
    replies.pop().map_or_else(
        || Err("the shared top gave no reply".into()),
        |(_, reply)| reply,
    )
}

impl CloudApp for SplitApp {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT.union(Capabilities::RESUME)
    }

    /// Admits here, on the caller's thread (tests and `measure-tops`; the hub builds
    /// tops on its admission thread).
    fn admit(&mut self, hello: &Hello) -> Result<Admitted, Refused> {
        match self.admit_job(hello) {
            AdmitJob::Decided(verdict) => verdict,
            AdmitJob::Build(job) => {
                job();
                self.admit_built(hello)
            }
        }
    }

    /// Decides at once unless a top must be made (a device's own, or the shared one at
    /// the first Hello): that, and reading a snapshot to resume it, is work for the
    /// admission thread.
    fn admit_job(&mut self, hello: &Hello) -> AdmitJob {
        let (admission, admitted) = match self.check(hello) {
            Ok(Some(checked)) => checked,
            Ok(None) => return AdmitJob::Decided(Ok(Admitted::default())),
            Err(reason) => return AdmitJob::Decided(Err(reason)),
        };
        info!(node = %hello.node, cut = admission.cut, form = ?admission.form, width = admission.width(), gradient = ?admission.gradient, run = admission.plan.run, start_step = admission.plan.start_step, "split session asks");
        if self.settings.top == TopTraining::Shared {
            return self.shared_job(&hello.node, admission, admitted);
        }
        self.own_job(&hello.node, admission, admitted)
    }

    fn admit_built(&mut self, hello: &Hello) -> Result<Admitted, Refused> {
        let built = self
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&hello.node);
        let built = built.unwrap_or_else(|| {
            Err(
                "the cloud failed while building this device's top; its operator has the log"
                    .into(),
            )
        })?;
        let Some((admission, admitted)) = self.check(hello)? else {
            return Ok(Admitted::default());
        };
        match built {
            Built::Shared(top) => {
                self.install_shared(*top);
                self.admit_shared(&hello.node, admission, admitted)
            }
            Built::Own(trainer) => Ok(self.install_own(&hello.node, *trainer, admitted)),
        }
    }

    fn split_step(
        &mut self,
        node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        // Here, on the caller's thread (tests and `measure-tops`; the hub runs jobs).
        self.split_job(node, Box::new(activations.clone()), tensor.to_vec())()
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
}
