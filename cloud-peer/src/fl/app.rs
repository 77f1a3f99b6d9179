//! `tandem-cloud serve --app fl`: federated rounds for devices over QUIC.
//!
//! Each round samples `per_round` of the joined, connected devices (seeded by the round),
//! sends them the global model with the round's settings, and when the round commits
//! validates every update (decode against the model's layout, finite values, plausible
//! example count, norm bound), aggregates the valid ones with the strategy, evaluates the
//! new global on the test set (which never leaves the cloud), and commits the state to
//! `--state DIR` before the next round starts. A cloud restarted on that directory
//! continues with the next round.

use super::record::{RoundRecord, identity_update_bytes, plot_png, summary};
use super::state::{RunState, StateError};
use super::strategy::{ClientUpdate, Strategy, StrategyKind};
use super::validate::{NormBound, validate};
use crate::app::{CloudApp, RoundOutcome, RoundQuorum};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_runtime::fl::task::{LocalConfig, Task};
use tandem_runtime::fl::update::UpdateEncoder;
use tandem_runtime::rng::SplitMix64;
use tandem_runtime::wire::{
    Capabilities, CodecDesc, Hello, ModelPayload, NodeName, RoundTask, wire_bytes,
};
use tracing::{info, warn};

/// The settings of a federated run.
#[derive(Clone, Debug)]
pub struct FlSettings {
    /// Rounds in the run (a restarted run continues to this total).
    pub rounds: u64,
    /// Devices per round.
    pub per_round: usize,
    /// Updates a round needs by its deadline to commit.
    pub min_updates: usize,
    /// Time devices have to report.
    pub deadline: Duration,
    /// Local training sent to the devices.
    pub local: LocalConfig,
    /// Update codec.
    pub codec: CodecDesc,
    /// Aggregation.
    pub strategy: StrategyKind,
    /// Update norm bound.
    pub bound: Option<NormBound>,
    /// Seed of the initial model and the sampling.
    pub seed: u64,
    /// Where state and metrics live.
    pub state_dir: PathBuf,
}

/// The federated application.
pub struct FlApp<T: Task> {
    task: T,
    test: T::Data,
    settings: FlSettings,
    state: RunState,
    strategy: Strategy,
    records: Vec<RoundRecord>,
    started: Option<(u64, Instant, usize)>,
}

impl<T: Task + 'static> FlApp<T>
where
    T::Data: 'static,
{
    /// The app, continuing from the state in `settings.state_dir` if there is one.
    pub fn new(task: T, test: T::Data, settings: FlSettings) -> Result<Self, StateError> {
        let layout = task.layout().fingerprint();
        let strategy_spec = settings.strategy.to_string();
        let saved = RunState::load(&settings.state_dir, task.name(), layout, &strategy_spec)?;
        let mut strategy = Strategy::new(settings.strategy);
        let state = match saved {
            Some(state) => {
                info!(round = state.round, dir = %settings.state_dir.display(), "resuming");
                strategy.first = state.first.clone();
                strategy.second = state.second.clone();
                strategy.steps = state.steps;
                state
            }
            None => RunState {
                task: task.name().to_string(),
                layout,
                strategy: strategy_spec,
                round: 0,
                global: task.initial_weights(settings.seed),
                first: Vec::new(),
                second: Vec::new(),
                steps: 0,
            },
        };
        let records = load_records(&settings.state_dir, state.round);
        Ok(Self {
            task,
            test,
            settings,
            state,
            strategy,
            records,
            started: None,
        })
    }

    /// The last committed round.
    pub fn round(&self) -> u64 {
        self.state.round
    }

    fn commit(&mut self, record: Option<RoundRecord>) {
        self.state.first = self.strategy.first.clone();
        self.state.second = self.strategy.second.clone();
        self.state.steps = self.strategy.steps;
        if let Err(err) = self.state.save(&self.settings.state_dir) {
            // The round stays in memory; the next commit tries again.
            warn!("state not saved: {err}");
        }
        if let Some(record) = record {
            println!("{}", record.line(self.settings.rounds));
            self.records.push(record);
            if self.state.round == self.settings.rounds
                && let Some(line) =
                    summary(&self.records, identity_update_bytes(self.task.layout()))
            {
                println!("{line}");
            }
            let json = serde_json::json!({ "task": self.task.name(), "rounds": self.records });
            let files = [
                (
                    "metrics.json",
                    serde_json::to_vec_pretty(&json).unwrap_or_default(),
                ),
                ("accuracy.png", plot_png(&self.records)),
            ];
            for (name, bytes) in files {
                let path = self.settings.state_dir.join(name);
                if let Err(err) = tandem_runtime::paths::write_atomic(&path, &bytes, 0o644) {
                    warn!("{}: {err}", path.display());
                }
            }
        }
    }
}

/// The rounds already in `dir`'s metrics (up to `round`, the state's), so a restarted
/// cloud keeps the whole history; unreadable metrics start a new list, with a warning.
fn load_records(dir: &std::path::Path, round: u64) -> Vec<RoundRecord> {
    let path = dir.join("metrics.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Vec::new();
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|json| serde_json::from_value::<Vec<RoundRecord>>(json["rounds"].clone()).ok());
    match parsed {
        Some(mut records) => {
            records.retain(|r| r.round <= round);
            records
        }
        None => {
            warn!(
                "{}: unreadable, starting a new metrics history",
                path.display()
            );
            Vec::new()
        }
    }
}

impl<T: Task + 'static> CloudApp for FlApp<T>
where
    T::Data: 'static,
{
    fn capabilities(&self) -> Capabilities {
        Capabilities::FL
    }

    fn admit(&mut self, hello: &Hello) -> Result<(), String> {
        if !hello.capabilities.contains(Capabilities::FL) {
            return Err("this cloud serves federated learning only".into());
        }
        if hello.model.name.as_str() != self.task.name() {
            return Err(format!(
                "this cloud runs task '{}', not '{}'",
                self.task.name(),
                hello.model.name
            ));
        }
        Ok(())
    }

    fn quorum(&self) -> RoundQuorum {
        RoundQuorum {
            participants: self.settings.per_round,
            min_updates: self.settings.min_updates,
        }
    }

    fn participants(&mut self, available: &[NodeName]) -> Vec<NodeName> {
        let mut pool = available.to_vec();
        let mut rng = SplitMix64::derive(self.settings.seed, self.state.round + 1);
        rng.shuffle(&mut pool);
        pool.truncate(self.settings.per_round);
        pool.sort();
        pool
    }

    fn round_task(&mut self, _hub_round: u64) -> Option<(RoundTask, Vec<u8>)> {
        if self.state.round >= self.settings.rounds {
            return None;
        }
        let round = self.state.round + 1;
        let model = UpdateEncoder::new(self.task.layout().clone(), CodecDesc::Identity)
            .and_then(|mut e| e.encode(&self.state.global));
        let model = match model {
            Ok(model) => model,
            Err(err) => {
                warn!("cannot encode the global model: {err}");
                return None;
            }
        };
        let task = RoundTask {
            round,
            deadline_ms: self.settings.deadline.as_millis() as u64,
            config: self.settings.local.round_config(),
            model: ModelPayload::Full,
            codec: self.settings.codec,
            payload_len: model.len() as u64,
        };
        let task_bytes = wire_bytes(&task, model.len()).unwrap_or(model.len());
        self.started = Some((round, Instant::now(), task_bytes));
        Some((task, model))
    }

    fn round_ended(&mut self, outcome: RoundOutcome) {
        let (round, updates) = match outcome {
            RoundOutcome::Committed { round, updates } => (round, updates),
            RoundOutcome::Aborted { round, received } => {
                warn!(round, received, "round aborted: the global model stays");
                self.state.round = round;
                self.commit(None);
                return;
            }
        };
        let seconds = self
            .started
            .filter(|s| s.0 == round)
            .map_or(0.0, |s| s.1.elapsed().as_secs_f64());
        let mut valid: Vec<ClientUpdate> = Vec::new();
        let (mut refused, mut clipped, mut uplink) = (0, 0, 0u64);
        for (node, update, bytes) in &updates {
            uplink += wire_bytes(update, bytes.len()).unwrap_or(0) as u64;
            if update.codec != self.settings.codec {
                warn!(%node, round, "update refused: codec {:?}, the round's is {:?}", update.codec, self.settings.codec);
                refused += 1;
                continue;
            }
            match validate(
                update.codec,
                self.task.layout(),
                bytes,
                update.num_examples,
                self.settings.bound,
            ) {
                Ok(v) => {
                    clipped += usize::from(v.clipped);
                    valid.push(v.update);
                }
                Err(reason) => {
                    warn!(%node, round, "update refused: {reason}");
                    refused += 1;
                }
            }
        }
        let aggregated = if valid.is_empty() {
            0
        } else {
            match self.strategy.aggregate(&mut self.state.global, &valid) {
                Ok(used) => used.selected.len(),
                Err(err) => {
                    warn!(round, "not aggregated: {err}");
                    0
                }
            }
        };
        self.state.round = round;
        let eval = self.task.evaluate(&self.state.global, &self.test);
        let (accuracy, loss) = eval.map_or((f64::NAN, f64::NAN), |e| (e.accuracy, e.loss));
        let task_bytes = self.started.map_or(0, |s| s.2);
        self.commit(Some(RoundRecord {
            round,
            accuracy,
            loss,
            train_loss: None,
            sampled: self.settings.per_round,
            aggregated,
            refused,
            dropped: self.settings.per_round.saturating_sub(updates.len()),
            clipped,
            uplink_bytes: uplink,
            downlink_bytes: (task_bytes * self.settings.per_round) as u64,
            seconds,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_runtime::data::fashion_mnist::Images;
    use tandem_runtime::fl::fmnist::Fmnist;
    use tandem_runtime::model::ComputeBackend;

    fn app(dir: &str, per_round: usize) -> FlApp<Fmnist> {
        let state_dir =
            std::env::temp_dir().join(format!("tandem-flapp-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        let settings = FlSettings {
            rounds: 5,
            per_round,
            min_updates: per_round,
            deadline: Duration::from_secs(60),
            local: LocalConfig {
                epochs: 1,
                batch: 32,
                lr: 0.05,
                momentum: 0.9,
                proximal_mu: 0.0,
            },
            codec: CodecDesc::Identity,
            strategy: StrategyKind::FedAvg,
            bound: None,
            seed: 7,
            state_dir,
        };
        FlApp::new(
            Fmnist::new(ComputeBackend::Flex),
            Images::default(),
            settings,
        )
        .unwrap()
    }

    fn nodes(n: usize) -> Vec<NodeName> {
        (0..n)
            .map(|i| NodeName::try_from(format!("dev-{i:02}").as_str()).unwrap())
            .collect()
    }

    #[test]
    fn participants_are_a_seeded_sample_of_the_available_devices() {
        let available = nodes(10);
        let mut a = app("sample-a", 3);
        let picked = a.participants(&available);
        assert_eq!(picked.len(), 3);
        assert!(
            picked.windows(2).all(|w| w[0] < w[1]),
            "sorted and distinct"
        );
        assert!(picked.iter().all(|p| available.contains(p)));
        // The same seed and round pick the same devices; a round's pick is not always
        // the first devices in name order.
        assert_eq!(app("sample-b", 3).participants(&available), picked);
        let firsts = (0..20)
            .filter(|&seed| {
                let mut app = app(&format!("sample-seed-{seed}"), 3);
                app.settings.seed = seed;
                app.participants(&available) == available[..3]
            })
            .count();
        assert!(firsts < 20);
        // Fewer devices than a round wants: all of them.
        assert_eq!(a.participants(&available[..2]), available[..2]);
    }

    #[test]
    fn round_tasks_carry_the_settings_and_stop_after_the_last_round() {
        let mut app = app("tasks", 2);
        let (task, model) = app.round_task(1).unwrap();
        assert_eq!(task.round, 1);
        assert_eq!(task.payload_len as usize, model.len());
        assert_eq!((task.config.local_epochs, task.config.batch_size), (1, 32));
        // The model is the app's global, identity-coded in the task's layout.
        let decoded =
            tandem_runtime::fl::update::decode(CodecDesc::Identity, app.task.layout(), &model)
                .unwrap();
        assert_eq!(decoded, app.state.global);
        app.state.round = 5;
        assert!(app.round_task(6).is_none());
    }
}
