//! The split fine-tuning application: one MiniLM top half per device, trained on the
//! cut tensors it sends.

use crate::app::{CloudApp, RoundOutcome};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{MiniLm, ModelError};
use tandem_runtime::model::split::LrSchedule;
use tandem_runtime::model::split::cloud::{Admission, CloudTrainer};
use tandem_runtime::session::fl::Assignment;
use tandem_runtime::wire::{Activations, Capabilities, CutGradient, Hello, NodeName};
use tracing::info;

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
    /// One top per admitted device, made at its Hello.
    trainers: HashMap<NodeName, CloudTrainer>,
    totals: std::sync::Arc<std::sync::Mutex<ComputeTotals>>,
}

impl SplitApp {
    /// Loads the model now, so a missing cache fails at start-up, not mid-run.
    pub fn new(settings: SplitSettings) -> Result<Self, ModelError> {
        let model = MiniLm::load(&settings.model_dir, &settings.backend.training_device())?;
        Ok(Self {
            settings,
            model,
            trainers: HashMap::new(),
            totals: Default::default(),
        })
    }

    /// A handle on the compute totals, readable while the server runs.
    pub fn totals(&self) -> std::sync::Arc<std::sync::Mutex<ComputeTotals>> {
        self.totals.clone()
    }
}

impl CloudApp for SplitApp {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT.union(Capabilities::RESUME)
    }

    fn admit(&mut self, hello: &Hello) -> Result<(), String> {
        if !hello.capabilities.contains(Capabilities::SPLIT) {
            // A probe or an FL client: nothing to check.
            return Ok(());
        }
        let admission = Admission::check(hello)?;
        info!(node = %hello.node, cut = admission.cut, form = ?admission.form, width = admission.width(), gradient = ?admission.gradient, "admitted split session");
        // A device that comes back with the same request keeps its top; with another
        // cut or codec it gets a fresh one.
        if self
            .trainers
            .get(&hello.node)
            .is_none_or(|t| t.admission() != admission)
        {
            let trainer = CloudTrainer::new(
                self.model.clone(),
                &self.settings.backend.training_device(),
                admission,
                self.settings.schedule,
                self.settings.seed,
            )?;
            self.trainers.insert(hello.node.clone(), trainer);
        }
        Ok(())
    }

    fn split_step(
        &mut self,
        node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        let trainer = self
            .trainers
            .get_mut(node)
            .ok_or_else(|| format!("'{node}' sent activations without a split Hello"))?;
        let started = Instant::now();
        let reply = trainer.step(activations, tensor);
        if activations.train
            && let Ok(mut totals) = self.totals.lock()
        {
            totals.steps += 1;
            totals.train += started.elapsed();
        }
        reply
    }

    fn round_tasks(&mut self, _round: u64, _participants: &[NodeName]) -> Option<Vec<Assignment>> {
        None
    }

    fn round_ended(&mut self, _outcome: RoundOutcome) {}
}
