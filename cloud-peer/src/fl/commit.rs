//! What a federated cloud holds of its run, and the work of committing a round: the
//! task and its test set, the run's state, the strategy, the records and the privacy
//! account. [`super::app::FlApp`] keeps it behind a lock and commits each ended round
//! on a worker thread (`CloudApp::round_job`): decoding and validating the updates,
//! aggregating them, evaluating the new global on the test set, writing the metrics and
//! the plot and saving the state, while the hub goes on admitting devices and routing
//! their messages. The hub starts no round before the commit is done, so nothing else
//! touches the run meanwhile.

use super::app::FlSettings;
use super::apply::{RoundNoise, apply_round};
use super::central_dp::{CentralDp, secure_normals};
use super::record::{
    RoundRecord, downlink_summary, identity_task_bytes, identity_update_bytes, mean_train_loss,
    plot_png, summary,
};
use super::round_bounds::{self, RoundUpdates};
use super::state::{RunState, StateError, StateLock};
use super::strategy::{Strategy, StrategyState};
use super::validate::validate;
use std::collections::BTreeMap;
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::fl::downlink::{self, ModelView, Sent};
use tandem_runtime::fl::task::Task;
use tandem_runtime::wire::{CodecDesc, NodeName, Update, wire_bytes};
use tracing::{info, warn};

/// A run: everything a round's commit reads and writes.
pub(super) struct RunCore<T: Task> {
    pub(super) task: T,
    pub(super) test: T::Data,
    pub(super) settings: FlSettings,
    pub(super) state: RunState,
    pub(super) strategy: Box<dyn Strategy>,
    pub(super) records: Vec<RoundRecord>,
    /// Central DP and the privacy spent, saved beside the state.
    pub(super) dp: Option<CentralDp>,
    /// This cloud's hold on `settings.state_dir`.
    _lock: StateLock,
}

/// A committed round as the hub hands it to the commit: each update with the weight its
/// device may have (`None`: the device never joined), the round's figures, and the
/// members to save with the state.
pub(super) struct EndedRound {
    pub(super) round: u64,
    pub(super) updates: Vec<(NodeName, Update, Vec<u8>, Option<u64>)>,
    pub(super) seconds: f64,
    pub(super) downlink_bytes: u64,
    pub(super) sampled: usize,
    pub(super) members: BTreeMap<String, u64>,
}

impl<T: Task> RunCore<T> {
    /// The run in `settings.state_dir` (locked for as long as this lives), or a new one.
    pub(super) fn load(task: T, test: T::Data, settings: FlSettings) -> Result<Self, StateError> {
        let lock = StateLock::acquire(&settings.state_dir)?;
        let layout = task.layout().fingerprint();
        let strategy_spec = settings.strategy.to_string();
        let saved = RunState::load(&settings.state_dir, task.name(), layout, &strategy_spec)?;
        let mut strategy = settings.strategy.build();
        let mut state = match saved {
            Some(state) => {
                info!(round = state.round, dir = %settings.state_dir.display(), "resuming");
                strategy
                    .restore(StrategyState {
                        first: state.first.clone(),
                        second: state.second.clone(),
                        steps: state.steps,
                    })
                    .map_err(|error| StateError::StrategyState {
                        dir: settings.state_dir.clone(),
                        error,
                    })?;
                state
            }
            None => RunState {
                task: task.name().to_string(),
                layout,
                strategy: strategy_spec,
                round: 0,
                committed: 0,
                members: BTreeMap::new(),
                global: task.initial_weights(settings.seed),
                first: Vec::new(),
                second: Vec::new(),
                steps: 0,
                factors: None,
            },
        };
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
        Ok(Self {
            task,
            test,
            settings,
            state,
            strategy,
            records,
            dp,
            _lock: lock,
        })
    }

    /// Round `round` aborted: the global model stays, the round id is used.
    pub(super) fn abort(&mut self, round: u64, members: BTreeMap<String, u64>) {
        self.state.round = round;
        self.commit(None, members);
    }

    /// Commits `ended`: validates its updates (at their weights), bounds them against the
    /// round's medians, aggregates them (with central DP's noise), evaluates the new
    /// global, and records and saves the round.
    pub(super) fn commit_round(&mut self, ended: EndedRound) {
        let EndedRound {
            round,
            updates,
            seconds,
            downlink_bytes,
            sampled,
            members,
        } = ended;
        let mut checked = RoundUpdates::default();
        let mut uplink = 0u64;
        for (node, update, bytes, weight) in &updates {
            uplink += wire_bytes(update, bytes.len()).unwrap_or(0) as u64;
            if update.codec != self.settings.codec {
                warn!(%node, round, "update refused: codec {:?}, the round's is {:?}", update.codec, self.settings.codec);
                checked.refuse();
                continue;
            }
            let Some(weight) = *weight else {
                warn!(%node, round, "update refused: the device never joined");
                checked.refuse();
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
                Ok(v) => checked.accept(node.clone(), update.train_loss, v),
                Err(reason) => {
                    warn!(%node, round, "update refused: {reason}");
                    checked.refuse();
                }
            }
        }
        let bounded = checked.bound(self.settings.median_caps);
        if bounded != round_bounds::Bounded::default() {
            info!(
                round,
                weights = bounded.weights,
                norms = bounded.scaled.len(),
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
                    self.abort(round, members);
                    return;
                };
                Some(RoundNoise { dp, normals })
            }
            None => None,
        };
        let aggregated = apply_round(
            self.strategy.as_mut(),
            &mut self.state.global,
            &mut self.state.factors,
            self.task.layout(),
            &checked.valid,
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
        let record = RoundRecord {
            round,
            accuracy,
            loss,
            train_loss: mean_train_loss(&checked.train_losses),
            sampled,
            aggregated,
            refused: checked.refused,
            clipped: checked.clipped(),
            contributors: checked.contributors,
            dropped: sampled.saturating_sub(updates.len()),
            uplink_bytes: uplink,
            downlink_bytes,
            seconds,
            epsilon,
            simulated_seconds: None,
            plans: Vec::new(),
        };
        self.commit(Some(record), members);
    }

    /// Commits the round: its record (if it ran) to the metrics and plot, then the state.
    /// In that order: a kill between the two leaves a record of a round the state does
    /// not hold, which a restart drops ([`load_records`]) and records again when it runs
    /// the round again; the other order would lose a committed round's record.
    fn commit(&mut self, record: Option<RoundRecord>, members: BTreeMap<String, u64>) {
        let recorded = record.is_some();
        if let Some(record) = record {
            println!(
                "{}",
                record.line(self.state.committed, self.settings.rounds)
            );
            self.records.push(record);
            self.write_metrics();
        }
        let StrategyState {
            first,
            second,
            steps,
        } = self.strategy.state();
        (self.state.first, self.state.second, self.state.steps) = (first, second, steps);
        self.state.members = members;
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
    pub(super) fn encode_model(
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
