//! `tandem-cloud serve --app fl`: federated rounds for devices over QUIC.
//!
//! Each round samples `per_round` of the joined, connected devices (seeded by the round;
//! a device that missed its last round's deadline sits out 1, 2, 4.. up to 16 rounds
//! unless it is needed to fill the round), sends each the global model with the round's
//! settings (whole, or with a lossy `--downlink` codec as a delta from the model the
//! device acknowledged last, see [`tandem_runtime::fl::downlink`]), and when the round
//! commits
//! validates every update (decode against the model's layout, finite values, plausible
//! example count, norm bound), aggregates the valid ones with the strategy, evaluates the
//! new global on the test set (which never leaves the cloud), and commits the state to
//! `--state DIR` before the next round starts. A cloud restarted on that directory
//! continues with the next round.

use super::apply::{RoundNoise, apply_round};
use super::central_dp::{CentralDp, DpSettings, secure_normals};
use super::record::{
    RoundRecord, downlink_summary, identity_task_bytes, identity_update_bytes, mean_train_loss,
    plot_png, summary,
};
use super::state::{RunState, StateError, StateLock};
use super::strategy::{ClientUpdate, Strategy, StrategyKind};
use super::membership::Membership;
use super::round_bounds::{self, MedianCaps};
use super::validate::{NormBound, validate};
use crate::app::{Admitted, CloudApp, RoundOutcome, RoundQuorum};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::fl::downlink::{self, ModelView, Sent};
use tandem_runtime::fl::task::{LocalConfig, Task};
use tandem_runtime::rng::SplitMix64;
use tandem_runtime::session::fl::Assignment;
use tandem_runtime::wire::{Capabilities, CodecDesc, Hello, NodeName, RoundTask, wire_bytes};
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
    /// Model codec (identity, f16 or int8); a lossy one sends deltas against the model
    /// each device last acknowledged.
    pub downlink: CodecDesc,
    /// Aggregation.
    pub strategy: StrategyKind,
    /// Update norm bound.
    pub bound: Option<NormBound>,
    /// Central differential privacy (needs `bound` in clip mode, checked by the caller
    /// with [`DpSettings::check`]).
    pub dp: Option<(DpSettings, f32)>,
    /// Seed of the initial model and the sampling.
    pub seed: u64,
    /// Where state and metrics live.
    pub state_dir: PathBuf,
    /// The most examples a device may declare when it joins.
    pub max_examples: u64,
    /// How far a round's updates may go past its medians (weight, norm).
    pub median_caps: MedianCaps,
    /// Rounds aborted in a row after which the run stops.
    pub max_aborted: u32,
}

impl FlSettings {
    /// The updates a round of `per_round` needs by default: 80% of them (so one silent
    /// device of ten does not abort every round), at least what `strategy` needs, at most
    /// the round.
    pub fn default_min_updates(per_round: usize, strategy: StrategyKind) -> usize {
        (4 * per_round)
            .div_ceil(5)
            .max(strategy.min_updates())
            .min(per_round)
            .max(1)
    }
}

/// The federated application.
pub struct FlApp<T: Task> {
    task: T,
    test: T::Data,
    settings: FlSettings,
    state: RunState,
    strategy: Strategy,
    records: Vec<RoundRecord>,
    /// The round in flight.
    started: Option<Started>,
    /// The view each device acknowledged last (a lossy downlink codec only).
    views: HashMap<NodeName, ModelView>,
    /// Devices that missed a deadline: (rounds missed in a row, the round they sit out to).
    misses: HashMap<NodeName, (u32, u64)>,
    /// Central DP and the privacy spent, saved beside the state.
    dp: Option<CentralDp>,
    /// The devices that joined and their declared example counts (saved in the state).
    members: Membership,
    /// Rounds aborted in a row, and who of their participants never delivered.
    aborted: AbortStreak,
    /// The most bytes an update of the model takes under the run's codec: a larger one
    /// is refused unread.
    update_bytes: u64,
    /// This cloud's hold on `settings.state_dir`.
    _lock: StateLock,
}

/// The round in flight.
struct Started {
    round: u64,
    at: Instant,
    downlink_bytes: u64,
    participants: Vec<NodeName>,
    /// Each participant's view once it has decoded its task (lossy downlink only).
    sent: HashMap<NodeName, ModelView>,
}

/// The most bytes an update of `layout` takes under `codec`; for a codec whose size
/// depends on the round (ACP: coefficients against the round's shared factors), twice
/// the identity update, which it never reaches.
fn update_bytes_bound(layout: &tandem_runtime::fl::Layout, codec: CodecDesc) -> u64 {
    let identity = tandem_runtime::fl::update::identity_len(layout);
    super::adapt::update_bytes_bound(layout, codec).unwrap_or(2 * identity) as u64
}

/// Rounds aborted in a row.
#[derive(Debug, Default)]
struct AbortStreak {
    rounds: u32,
    /// Participants of those rounds that never delivered in any of them.
    silent: std::collections::BTreeSet<NodeName>,
    /// Participants that delivered in one of them.
    delivered: std::collections::BTreeSet<NodeName>,
}

/// Rounds a device sits out after its `misses`-th missed deadline in a row.
fn backoff(misses: u32) -> u64 {
    1 << misses.saturating_sub(1).min(4)
}

impl<T: Task + 'static> FlApp<T>
where
    T::Data: 'static,
{
    /// The app, continuing from the state in `settings.state_dir` if there is one.
    pub fn new(task: T, test: T::Data, settings: FlSettings) -> Result<Self, StateError> {
        let lock = StateLock::acquire(&settings.state_dir)?;
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
                committed: 0,
                members: Default::default(),
                global: task.initial_weights(settings.seed),
                first: Vec::new(),
                second: Vec::new(),
                steps: 0,
                factors: None,
            },
        };
        let mut state = state;
        state.factors = shared_factors(state.factors.take(), &task, &settings);
        let records = load_records(&settings.state_dir, state.round);
        let dp = match settings.dp {
            Some((dp_settings, clip)) => {
                // Participants follow a public seed: no amplification by sampling (q = 1).
                let per_round = settings.per_round;
                let mut dp = CentralDp::new(dp_settings, clip, per_round, per_round);
                let restored = dp.restore(&settings.state_dir)?;
                if !restored && state.round > 0 {
                    return Err(StateError::Unaccounted {
                        path: settings.state_dir.join(super::state::FILE_NAME),
                        round: state.round,
                        file: super::central_dp::ACCOUNT_FILE,
                    });
                }
                info!(epsilon = dp.epsilon(), "central DP");
                Some(dp)
            }
            None => None,
        };
        let members = Membership::restore(&state.members, settings.max_examples);
        let update_bytes = update_bytes_bound(task.layout(), settings.codec);
        Ok(Self {
            update_bytes,
            _lock: lock,
            members,
            aborted: AbortStreak::default(),
            dp,
            task,
            test,
            settings,
            state,
            strategy,
            records,
            started: None,
            views: HashMap::new(),
            misses: HashMap::new(),
        })
    }

    /// The last round run (committed or aborted).
    pub fn round(&self) -> u64 {
        self.state.round
    }

    /// Rounds committed.
    pub fn committed(&self) -> u64 {
        self.state.committed
    }

    /// Commits the round: its record (if it ran) to the metrics and plot, then the state.
    /// In that order: a kill between the two leaves a record of a round the state does
    /// not hold, which a restart drops ([`load_records`]) and records again when it runs
    /// the round again; the other order would lose a committed round's record.
    fn commit(&mut self, record: Option<RoundRecord>) {
        let recorded = record.is_some();
        if let Some(record) = record {
            println!("{}", record.line(self.settings.rounds));
            self.records.push(record);
            self.write_metrics();
        }
        self.state.first = self.strategy.first.clone();
        self.state.second = self.strategy.second.clone();
        self.state.steps = self.strategy.steps;
        self.state.members = self.members.to_saved();
        // The privacy account first: a state saved without it would under-count.
        if let Some(dp) = &self.dp
            && let Err(err) = dp.save(&self.settings.state_dir)
        {
            warn!("privacy account not saved, nor the state: {err}");
            return;
        }
        if let Err(err) = self.state.save(&self.settings.state_dir) {
            // The round stays in memory; the next commit tries again.
            warn!("state not saved: {err}");
        }
        if recorded && self.state.committed == self.settings.rounds {
            let layout = self.task.layout();
            let lines = [
                summary(&self.records, identity_update_bytes(layout)),
                downlink_summary(&self.records, identity_task_bytes(layout)),
            ];
            for line in lines.into_iter().flatten() {
                println!("{line}");
            }
        }
    }

    /// `metrics.json` and `accuracy.png` in the state directory, from the records.
    fn write_metrics(&self) {
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

    /// Round `round`'s model for `node`, whole or against `base` (the view it
    /// acknowledged), in the downlink codec and that codec. An encode error (a bug: the
    /// settings were checked at start-up) falls back to the whole model in f32 rather
    /// than stop the run; `None` only if even that fails.
    fn encode_model(
        &self,
        node: &NodeName,
        base: Option<&ModelView>,
        round: u64,
    ) -> Option<(CodecDesc, Sent)> {
        let (layout, global) = (self.task.layout(), &self.state.global);
        let codec = self.settings.downlink;
        match downlink::send(layout, codec, global, base, round) {
            Ok(sent) => Some((codec, sent)),
            Err(err) => {
                warn!(%node, "cannot encode the global model ({err}); sending it whole in f32");
                let identity = CodecDesc::Identity;
                match downlink::send(layout, identity, global, None, round) {
                    Ok(sent) => Some((identity, sent)),
                    Err(err) => {
                        warn!("cannot encode the global model: {err}; the run stops");
                        None
                    }
                }
            }
        }
    }

    /// Views and misses after `started`'s round, in which the updates of `delivered`
    /// arrived (committed or aborted). A device whose update arrived holds the view sent
    /// to it; any other participant gets the full model next time and sits out.
    fn settle(&mut self, mut started: Started, delivered: &[&NodeName]) {
        let arrived = |node: &NodeName| delivered.contains(&node);
        for node in &started.participants {
            self.views.remove(node);
            if arrived(node)
                && let Some(view) = started.sent.remove(node)
            {
                self.views.insert(node.clone(), view);
            }
        }
        for node in started.participants {
            if arrived(&node) {
                self.misses.remove(&node);
            } else {
                let entry = self.misses.entry(node).or_insert((0, 0));
                entry.0 += 1;
                entry.1 = started.round + backoff(entry.0);
            }
        }
    }
}

impl<T: Task> FlApp<T> {
    /// Counts an aborted round of `participants`, of whom `delivered` reported, in the
    /// streak; at `max_aborted` in a row no more rounds start, and one line says who
    /// never reported.
    fn note_abort(&mut self, participants: &[NodeName], delivered: &[NodeName]) {
        let streak = &mut self.aborted;
        streak.rounds += 1;
        streak.delivered.extend(delivered.iter().cloned());
        streak.silent.extend(
            participants
                .iter()
                .filter(|p| !delivered.contains(p))
                .cloned(),
        );
        let reported = &streak.delivered;
        streak.silent.retain(|node| !reported.contains(node));
        if streak.rounds == self.settings.max_aborted {
            let silent: Vec<&str> = streak.silent.iter().map(NodeName::as_str).collect();
            let line = format!(
                "fl: stopped after {} rounds aborted in a row (each needs {} updates); never reported: {}",
                streak.rounds,
                self.settings.min_updates,
                if silent.is_empty() {
                    "nobody (too few devices reported in time)".to_string()
                } else {
                    silent.join(", ")
                }
            );
            warn!("{line}");
            println!("{line}");
        }
    }
}

/// The factors the next round shares under `settings.codec`: the saved ones where they
/// fit the codec and model, fresh ones (seeded) for an ACP run without them, none for
/// other codecs.
fn shared_factors<T: Task>(
    saved: Option<SharedFactors>,
    task: &T,
    settings: &FlSettings,
) -> Option<SharedFactors> {
    let CodecDesc::Acp { .. } = settings.codec else {
        return None;
    };
    let layout = task.layout();
    match saved.filter(|f| f.fits(layout, settings.codec)) {
        Some(saved) => Some(saved),
        None => SharedFactors::initial(layout, settings.codec, settings.seed).ok(),
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

    fn admit(&mut self, hello: &Hello) -> Result<Admitted, String> {
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
        Ok(Admitted {
            update_bytes: Some(self.update_bytes),
            ..Admitted::default()
        })
    }

    fn join(&mut self, node: &NodeName, examples: u64) -> Result<(), String> {
        self.members
            .join(node, examples)
            .map(|_| ())
            .map_err(|refusal| refusal.to_string())
    }

    /// A round starts once it could commit: `min_updates` devices connected (it samples
    /// up to `per_round` of them), so devices that left do not stall the run.
    fn quorum(&self) -> RoundQuorum {
        RoundQuorum {
            participants: self.settings.min_updates,
            min_updates: self.settings.min_updates,
        }
    }

    fn participants(&mut self, available: &[NodeName]) -> Vec<NodeName> {
        let next = self.state.round + 1;
        let (mut live, mut resting): (Vec<NodeName>, Vec<NodeName>) = available
            .iter()
            .cloned()
            .partition(|node| self.misses.get(node).is_none_or(|&(_, until)| until < next));
        let mut rng = SplitMix64::derive(self.settings.seed, next);
        rng.shuffle(&mut live);
        rng.shuffle(&mut resting);
        // Devices sitting out fill the round only where the live ones are too few.
        let mut pool = live;
        pool.extend(resting);
        pool.truncate(self.settings.per_round);
        pool.sort();
        pool
    }

    fn round_tasks(
        &mut self,
        _hub_round: u64,
        participants: &[NodeName],
    ) -> Option<Vec<Assignment>> {
        if self.state.committed >= self.settings.rounds {
            return None;
        }
        if self.aborted.rounds >= self.settings.max_aborted {
            return None;
        }
        if self
            .dp
            .as_ref()
            .is_some_and(CentralDp::next_round_exceeds_target)
        {
            info!(
                round = self.state.round,
                "one more round would pass --dp-epsilon: no more rounds"
            );
            return None;
        }
        // Every noised model that leaves has its charge on disk: a cloud that cannot save
        // the account releases nothing more.
        if let Some(dp) = &self.dp
            && let Err(err) = dp.save(&self.settings.state_dir)
        {
            warn!("privacy account not saved ({err}): no more rounds");
            return None;
        }
        let round = self.state.round + 1;
        let mut started = Started {
            round,
            at: Instant::now(),
            downlink_bytes: 0,
            participants: participants.to_vec(),
            sent: HashMap::new(),
        };
        let factors = self.state.factors.as_ref().map(SharedFactors::to_bytes);
        let factors = factors.unwrap_or_default();
        let mut assignments = Vec::with_capacity(participants.len());
        // The whole model is the same for every device that gets it: encoded once.
        let mut whole: Option<(CodecDesc, Sent)> = None;
        for node in participants {
            let (model_codec, sent) = match (self.views.get(node), &whole) {
                (Some(base), _) => self.encode_model(node, Some(base), round)?,
                (None, Some(whole)) => whole.clone(),
                (None, None) => whole.insert(self.encode_model(node, None, round)?).clone(),
            };
            let task = RoundTask {
                round,
                deadline_ms: self.settings.deadline.as_millis() as u64,
                config: self.settings.local.round_config(),
                model: sent.payload,
                model_codec,
                update_codec: self.settings.codec,
                payload_len: (sent.bytes.len() + factors.len()) as u64,
                factors_len: factors.len() as u64,
            };
            let mut payload = sent.bytes;
            payload.extend_from_slice(&factors);
            started.downlink_bytes +=
                wire_bytes(&task, payload.len()).unwrap_or(payload.len()) as u64;
            if model_codec != CodecDesc::Identity {
                started.sent.insert(node.clone(), sent.view);
            }
            assignments.push(Assignment {
                to: node.clone(),
                task,
                model: payload,
            });
        }
        self.started = Some(started);
        Some(assignments)
    }

    fn round_ended(&mut self, outcome: RoundOutcome) {
        let (round, updates) = match outcome {
            RoundOutcome::Committed { round, updates } => (round, updates),
            RoundOutcome::Aborted { round, delivered } => {
                warn!(
                    round,
                    received = delivered.len(),
                    "round aborted: the global model stays, and the round does not count"
                );
                let participants = match self.started.take().filter(|s| s.round == round) {
                    Some(started) => {
                        let participants = started.participants.clone();
                        self.settle(started, &delivered.iter().collect::<Vec<_>>());
                        participants
                    }
                    None => Vec::new(),
                };
                self.note_abort(&participants, &delivered);
                self.state.round = round;
                self.commit(None);
                return;
            }
        };
        self.aborted = AbortStreak::default();
        let (seconds, downlink_bytes, sampled) = match self.started.take() {
            Some(started) if started.round == round => {
                let figures = (
                    started.at.elapsed().as_secs_f64(),
                    started.downlink_bytes,
                    started.participants.len(),
                );
                let delivered: Vec<&NodeName> = updates.iter().map(|(node, ..)| node).collect();
                self.settle(started, &delivered);
                figures
            }
            _ => (0.0, 0, self.settings.per_round),
        };
        let mut valid: Vec<ClientUpdate> = Vec::new();
        let mut contributors = Vec::new();
        let mut train_losses = Vec::new();
        let (mut refused, mut clipped, mut uplink) = (0, 0, 0u64);
        for (node, update, bytes) in &updates {
            uplink += wire_bytes(update, bytes.len()).unwrap_or(0) as u64;
            if update.codec != self.settings.codec {
                warn!(%node, round, "update refused: codec {:?}, the round's is {:?}", update.codec, self.settings.codec);
                refused += 1;
                continue;
            }
            // A device weighs at most what its first Join declared.
            let Some(weight) = self.members.weight(node, update.num_examples) else {
                warn!(%node, round, "update refused: the device never joined");
                refused += 1;
                continue;
            };
            match validate(
                update.codec,
                self.state.factors.as_ref(),
                self.task.layout(),
                bytes,
                weight,
                self.settings.bound,
            ) {
                Ok(v) => {
                    clipped += usize::from(v.clipped);
                    valid.push(v.update);
                    contributors.push(node.clone());
                    train_losses.push(update.train_loss);
                }
                Err(reason) => {
                    warn!(%node, round, "update refused: {reason}");
                    refused += 1;
                }
            }
        }
        let bounded = round_bounds::apply(self.settings.median_caps, &mut valid);
        if bounded != round_bounds::Bounded::default() {
            info!(
                round,
                weights = bounded.weights,
                norms = bounded.norms,
                "updates bounded by the round's medians"
            );
        }
        let noise = match self.dp.as_mut() {
            Some(dp) => {
                let Some(normals) = secure_normals(self.state.global.len()) else {
                    warn!(
                        round,
                        "the secure generator failed: the round is not aggregated"
                    );
                    self.state.round = round;
                    self.commit(None);
                    return;
                };
                Some(RoundNoise { dp, normals })
            }
            None => None,
        };
        let aggregated = apply_round(
            &mut self.strategy,
            &mut self.state.global,
            &mut self.state.factors,
            self.task.layout(),
            &valid,
            noise,
            round,
            self.settings.seed,
        );
        let epsilon = self.dp.as_ref().map(CentralDp::epsilon);
        self.state.round = round;
        self.state.committed += 1;
        let eval = self.task.evaluate(&self.state.global, &self.test);
        let eval = eval
            .inspect_err(|err| tracing::warn!(round, "evaluation failed: {err}"))
            .ok();
        let (accuracy, loss) = (eval.map(|e| e.accuracy), eval.map(|e| e.loss));
        let train_loss = mean_train_loss(&train_losses);
        clipped += bounded.norms;
        self.commit(Some(RoundRecord {
            round,
            accuracy,
            loss,
            train_loss,
            sampled,
            aggregated,
            refused,
            contributors,
            dropped: sampled.saturating_sub(updates.len()),
            clipped,
            uplink_bytes: uplink,
            downlink_bytes,
            seconds,
            epsilon,
            simulated_seconds: None,
            plans: Vec::new(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_runtime::data::fashion_mnist::Images;
    use tandem_runtime::fl::fmnist::Fmnist;
    use tandem_runtime::fl::update::{self, UpdateEncoder};
    use tandem_runtime::model::ComputeBackend;
    use tandem_runtime::wire::{ModelPayload, Update};

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
                max_steps: None,
            },
            codec: CodecDesc::Identity,
            downlink: CodecDesc::Identity,
            strategy: StrategyKind::FedAvg,
            bound: None,
            dp: None,
            seed: 7,
            state_dir,
            max_examples: super::super::validate::MAX_EXAMPLES,
            median_caps: MedianCaps::NETWORK,
            max_aborted: 10,
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
        let devices = nodes(2);
        let tasks = app.round_tasks(1, &devices).unwrap();
        assert_eq!(tasks.len(), 2);
        let Assignment { to, task, model } = &tasks[0];
        assert_eq!(to, &devices[0]);
        assert_eq!(task.round, 1);
        assert_eq!(task.payload_len as usize, model.len());
        assert_eq!(task.model, ModelPayload::Full);
        assert_eq!((task.config.local_epochs, task.config.batch_size), (1, 32));
        // The model is the app's global, identity-coded in the task's layout.
        let decoded =
            tandem_runtime::fl::update::decode(CodecDesc::Identity, app.task.layout(), model)
                .unwrap();
        assert_eq!(decoded, app.state.global);
        app.state.committed = 5;
        assert!(app.round_tasks(6, &devices).is_none());
    }

    /// Round `round` commits with a zero update from each of `delivered` (joined with 10
    /// examples).
    fn commit(app: &mut FlApp<Fmnist>, round: u64, delivered: &[NodeName]) {
        for node in delivered {
            app.join(node, 10).unwrap();
        }
        let zeros = vec![0.0; app.task.layout().len()];
        let bytes = UpdateEncoder::new(app.task.layout().clone(), CodecDesc::Identity)
            .unwrap()
            .encode(&zeros)
            .unwrap();
        let updates = delivered
            .iter()
            .map(|node| {
                let update = Update {
                    round,
                    node: node.clone(),
                    num_examples: 10,
                    train_loss: 0.5,
                    codec: CodecDesc::Identity,
                    payload_len: bytes.len() as u64,
                };
                (node.clone(), update, bytes.clone())
            })
            .collect();
        app.round_ended(RoundOutcome::Committed { round, updates });
    }

    #[test]
    fn a_lossy_downlink_sends_deltas_to_devices_that_acknowledged_and_full_models_to_others() {
        let mut app = app("downlink", 2);
        app.settings.downlink = CodecDesc::Int8 { block: 0 };
        let devices = nodes(3);
        let first = app.round_tasks(1, &devices[..2]).unwrap();
        assert!(first.iter().all(|a| a.task.model == ModelPayload::Full));
        // dev-00 delivered, dev-01 did not.
        commit(&mut app, 1, &devices[..1]);
        let record = app.records.last().unwrap();
        assert_eq!(record.train_loss, Some(0.5));
        assert_eq!(
            (record.contributors.as_slice(), record.dropped),
            (&devices[..1], 1)
        );
        let second = app.round_tasks(2, &devices).unwrap();
        let payloads: Vec<_> = second.iter().map(|a| a.task.model).collect();
        assert!(matches!(
            payloads[0],
            ModelPayload::Delta { base_round: 1, .. }
        ));
        assert_eq!(payloads[1..], [ModelPayload::Full, ModelPayload::Full]);
        // The device's own decode of its delta is the global to int8 precision.
        let held = downlink::receive(
            app.task.layout(),
            app.settings.downlink,
            first[0].task.model,
            &first[0].model,
            None,
            1,
        )
        .unwrap();
        let view = downlink::receive(
            app.task.layout(),
            app.settings.downlink,
            second[0].task.model,
            &second[0].model,
            Some(&held),
            2,
        )
        .unwrap();
        let error = view
            .weights
            .iter()
            .zip(&app.state.global)
            .map(|(v, g)| (v - g).abs())
            .fold(0.0, f32::max);
        assert!(error < 1e-3, "{error}");
        assert!(second[0].model.len() < update::identity_len(app.task.layout()) / 3);
    }

    /// Central DP on the network: each committed round is charged (q = 1) and noised, the
    /// account is saved with the state and restored by a restarted cloud, which stops
    /// before the target; a run with rounds but no account cannot turn DP on.
    #[test]
    fn central_dp_rounds_are_charged_saved_and_stop_before_the_target() {
        use super::super::accountant::RdpAccountant;
        let dp = DpSettings {
            noise_multiplier: 3.0,
            delta: 1e-5,
            target_epsilon: Some(2.5),
        };
        let mut app = app("dp", 2);
        let dir = app.settings.state_dir.clone();
        app.settings.dp = Some((dp, 1.0));
        app.dp = Some(CentralDp::new(dp, 1.0, 2, 2));
        let devices = nodes(2);
        let before = app.state.global.clone();
        app.round_tasks(1, &devices).unwrap();
        commit(&mut app, 1, &devices);
        // Zero updates: what moved the model is the noise.
        assert_ne!(app.state.global, before);
        let record = app.records.last().unwrap().clone();
        assert_eq!(record.aggregated, 2);
        let mut accountant = RdpAccountant::new();
        accountant.compose(1.0, 3.0, 1);
        assert_eq!(record.epsilon, Some(accountant.epsilon(1e-5).0));

        // Restarted on the same directory: the account continues.
        let settings = FlSettings {
            dp: Some((dp, 1.0)),
            ..app.settings.clone()
        };
        drop(app);
        let mut restarted = FlApp::new(
            Fmnist::new(ComputeBackend::Flex),
            Images::default(),
            settings.clone(),
        )
        .unwrap();
        assert_eq!(restarted.state.round, 1);
        let mut rounds = 1;
        while restarted.round_tasks(rounds + 1, &devices).is_some() {
            rounds += 1;
            commit(&mut restarted, rounds, &devices);
            assert!(rounds < 5, "the target never stopped the run");
        }
        let spent = restarted.records.last().unwrap().epsilon.unwrap();
        accountant.compose(1.0, 3.0, rounds - 1);
        assert_eq!(spent, accountant.epsilon(1e-5).0);
        assert!(spent <= 2.5);
        accountant.compose(1.0, 3.0, 1);
        assert!(accountant.epsilon(1e-5).0 > 2.5);
        drop(restarted);

        // A cloud that cannot save its account sends no more models.
        let mut unsaved = FlApp::new(
            Fmnist::new(ComputeBackend::Flex),
            Images::default(),
            settings.clone(),
        )
        .unwrap();
        unsaved.settings.rounds = 100;
        unsaved.dp = Some(CentralDp::new(dp, 1.0, 2, 2));
        unsaved.settings.state_dir = dir.join(super::super::state::FILE_NAME).join("not-a-dir");
        assert!(unsaved.round_tasks(rounds + 1, &devices).is_none());
        drop(unsaved);

        // The account lost: refused.
        std::fs::remove_file(dir.join(super::super::central_dp::ACCOUNT_FILE)).unwrap();
        let refused = FlApp::new(
            Fmnist::new(ComputeBackend::Flex),
            Images::default(),
            settings,
        );
        assert!(matches!(refused, Err(StateError::Unaccounted { .. })));
    }

    /// Two clouds on one `--state` directory would overwrite each other's state and
    /// privacy account: the second is refused while the first runs, and can start once
    /// the first has gone.
    #[test]
    fn a_second_cloud_on_the_same_state_directory_is_refused() {
        let first = app("locked", 2);
        let second = FlApp::new(
            Fmnist::new(ComputeBackend::Flex),
            Images::default(),
            first.settings.clone(),
        );
        let Err(err) = second else {
            panic!("a second cloud started on {}", first.settings.state_dir.display());
        };
        assert!(err.to_string().contains("another tandem-cloud"), "{err}");
        let settings = first.settings.clone();
        drop(first);
        assert!(FlApp::new(Fmnist::new(ComputeBackend::Flex), Images::default(), settings).is_ok());
    }

    /// One participant that never reports: the round aborts (quorum of all), the
    /// silent device is backed off like one that missed a committed round, the aborted
    /// round does not count toward `--rounds`, and the run still commits them all.
    #[test]
    fn an_aborted_round_backs_off_the_silent_and_does_not_count() {
        let mut app = app("aborted", 2);
        app.settings.rounds = 2;
        let devices = nodes(3);
        let silent = devices[1].clone();
        let first = [devices[0].clone(), silent.clone()];
        app.round_tasks(1, &first).unwrap();
        app.round_ended(RoundOutcome::Aborted {
            round: 1,
            delivered: vec![devices[0].clone()],
        });
        assert_eq!(app.committed(), 0);
        // The silent device sits out the next round while two others can fill it.
        for seed in 0..10 {
            app.settings.seed = seed;
            assert!(!app.participants(&devices).contains(&silent));
        }
        // Two rounds still commit; the next round after them is the end.
        let (a, b) = (devices[0].clone(), devices[2].clone());
        let tasks = app.round_tasks(2, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(tasks[0].task.round, 2, "round ids go on increasing");
        commit(&mut app, 2, &[a.clone(), b.clone()]);
        assert!(app.round_tasks(3, &[a.clone(), b.clone()]).is_some());
        commit(&mut app, 3, &[a.clone(), b.clone()]);
        assert_eq!(app.committed(), 2);
        assert!(app.round_tasks(4, &[a, b]).is_none());
    }

    /// A cloud whose rounds abort `max_aborted` times in a row stops starting rounds.
    #[test]
    fn rounds_that_abort_again_and_again_end_the_run() {
        let mut app = app("abort-streak", 2);
        app.settings.max_aborted = 3;
        let devices = nodes(2);
        for round in 1..=3 {
            assert!(app.round_tasks(round, &devices).is_some(), "round {round}");
            app.round_ended(RoundOutcome::Aborted {
                round,
                delivered: vec![devices[0].clone()],
            });
        }
        assert!(app.round_tasks(4, &devices).is_none());
        assert_eq!(app.committed(), 0);
    }

    /// The default quorum is 80% of a round (at least what the strategy needs, at most
    /// the round), so one silent device of ten does not abort every round.
    #[test]
    fn the_default_quorum_is_most_of_a_round_not_all_of_it() {
        for (per_round, strategy, want) in [
            (10, StrategyKind::FedAvg, 8),
            (1, StrategyKind::FedAvg, 1),
            (4, StrategyKind::FedAvg, 4),
            (5, StrategyKind::FedAvg, 4),
            (100, StrategyKind::FedAvg, 80),
        ] {
            assert_eq!(
                FlSettings::default_min_updates(per_round, strategy),
                want,
                "{per_round} per round"
            );
        }
        let krum: StrategyKind = "krum:f=2".parse().unwrap();
        assert_eq!(
            FlSettings::default_min_updates(5, krum),
            krum.min_updates().clamp(4, 5)
        );
    }

    /// One device cannot set its own FedAvg weight: its count is fixed by its first
    /// Join (a second Join with another is refused), and an update claiming 2^24
    /// examples, sign-flipped x10, beside nine honest ones, weighs what was declared and
    /// is bounded by the round's medians: the model still moves the honest way.
    #[test]
    fn a_device_cannot_raise_its_declared_count_or_outweigh_the_round() {
        let mut app = app("inflated", 10);
        let devices = nodes(10);
        for node in &devices {
            app.join(node, 600).unwrap();
        }
        let attacker = devices[9].clone();
        let refused = app.join(&attacker, 1 << 24).unwrap_err();
        assert!(refused.contains("600"), "{refused}");
        app.join(&attacker, 600).unwrap();
        assert!(app.join(&devices[0], 0).is_err());
        app.round_tasks(1, &devices).unwrap();
        let layout = app.task.layout().clone();
        let direction: Vec<f32> = (0..layout.len()).map(|i| ((i % 7) as f32 - 3.0) * 1e-3).collect();
        let encode = |scale: f32| {
            let values: Vec<f32> = direction.iter().map(|d| d * scale).collect();
            UpdateEncoder::new(layout.clone(), CodecDesc::Identity)
                .unwrap()
                .encode(&values)
                .unwrap()
        };
        let updates = devices
            .iter()
            .map(|node| {
                let (scale, claimed) = if *node == attacker {
                    (-10.0, 1 << 24)
                } else {
                    (1.0, 600)
                };
                let bytes = encode(scale);
                let update = Update {
                    round: 1,
                    node: node.clone(),
                    num_examples: claimed,
                    train_loss: 0.5,
                    codec: CodecDesc::Identity,
                    payload_len: bytes.len() as u64,
                };
                (node.clone(), update, bytes)
            })
            .collect();
        let before = app.state.global.clone();
        app.round_ended(RoundOutcome::Committed { round: 1, updates });
        let moved: Vec<f64> = app
            .state
            .global
            .iter()
            .zip(&before)
            .map(|(after, before)| f64::from(after - before))
            .collect();
        let along = moved
            .iter()
            .zip(&direction)
            .map(|(m, d)| m * f64::from(*d))
            .sum::<f64>()
            / direction.iter().map(|d| f64::from(*d).powi(2)).sum::<f64>();
        // Nine honest updates of 1 and one bounded to the median's length at -1: 0.8.
        assert!((along - 0.8).abs() < 0.01, "moved {along} of the honest direction");
    }

    #[test]
    fn a_device_that_missed_a_deadline_sits_out_unless_it_is_needed() {
        let mut app = app("misses", 2);
        let devices = nodes(4);
        let missed = devices[1].clone();
        app.round_tasks(1, &[devices[0].clone(), missed.clone()])
            .unwrap();
        commit(&mut app, 1, &devices[..1]);
        // Round 2: the three others are enough; round 3 too (it missed once: 1 round out,
        // so it is back from round 3 on).
        for _ in 0..10 {
            assert!(!app.participants(&devices).contains(&missed));
            app.settings.seed += 1;
        }
        // Only two devices available: it fills the round.
        assert!(app.participants(&devices[..2]).contains(&missed));
        app.state.round = 2;
        let back = (0..20).any(|seed| {
            app.settings.seed = seed;
            app.participants(&devices).contains(&missed)
        });
        assert!(back, "back in the pool after sitting out");
    }
}
