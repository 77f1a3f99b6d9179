//! `tandem-cloud serve --app fl`: federated rounds for devices over QUIC.
//!
//! Each round samples `per_round` of the joined, connected devices (seeded by the round;
//! a device that missed its last round's deadline sits out 1, 2, 4.. up to 16 rounds
//! unless it is needed to fill the round), sends each the global model with the round's
//! settings (whole, or with a lossy `--downlink` codec as a delta from the model the
//! device acknowledged last, see [`tandem_runtime::fl::downlink`]). When the round ends
//! the hub hands its commit to a worker ([`super::commit`]): every update validated
//! (decoded against the model's layout, finite values, its device's declared weight,
//! norm bound) and bounded against the round's medians, the valid ones aggregated with
//! the strategy, the new global evaluated on the test set (which never leaves the
//! cloud), and the state committed to `--state DIR` before the next round starts. A
//! cloud restarted on that directory continues with the next round.
//!
//! What stays on the hub is cheap: admissions, Joins (the run's [`Membership`]), who
//! takes part in a round, and the downlink views each device acknowledged.

use super::central_dp::{CentralDp, DpSettings};
use super::commit::{EndedRound, RunCore};
use super::membership::Membership;
use super::round_bounds::MedianCaps;
use super::state::StateError;
use super::strategy::StrategySpec;
use super::validate::NormBound;
use crate::app::{Admitted, CloudApp, Refused, RoundJob, RoundOutcome, RoundQuorum};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::fl::downlink::{ModelView, Sent};
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
    pub strategy: StrategySpec,
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
    pub fn default_min_updates(per_round: usize, strategy: &StrategySpec) -> usize {
        (4 * per_round)
            .div_ceil(5)
            .max(strategy.min_updates())
            .min(per_round)
            .max(1)
    }
}

/// The federated application: the hub's side of the run (who joined, who takes part,
/// what each device acknowledged) and the run itself behind a lock, committed on a
/// worker.
pub struct FlApp<T: Task> {
    /// The run: locked by a round's commit, on a worker, and by the hub only between
    /// rounds (the hub starts no round while a commit runs).
    core: Arc<Mutex<RunCore<T>>>,
    /// The task's name, for admissions.
    task_name: &'static str,
    /// The round in flight.
    started: Option<Started>,
    /// The view each device acknowledged last (a lossy downlink codec only).
    views: HashMap<NodeName, ModelView>,
    /// Devices that missed a deadline: (rounds missed in a row, the round they sit out to).
    misses: HashMap<NodeName, (u32, u64)>,
    /// The devices that joined and their declared example counts (saved in the state).
    members: Membership,
    /// Rounds aborted in a row, and who of their participants never delivered.
    aborted: AbortStreak,
    /// The most bytes an update of the model takes under the run's codec: a larger one
    /// is refused unread.
    update_bytes: u64,
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
    silent: BTreeSet<NodeName>,
    /// Participants that delivered in one of them.
    delivered: BTreeSet<NodeName>,
}

impl AbortStreak {
    /// The line of a run stopped by this streak, rounds of `min_updates` updates each.
    fn stopped(&self, min_updates: usize) -> String {
        let silent: Vec<&str> = self.silent.iter().map(NodeName::as_str).collect();
        format!(
            "the run stopped after {} rounds aborted in a row (each needs {min_updates} updates); never reported: {}",
            self.rounds,
            if silent.is_empty() {
                "nobody (too few devices reported in time)".to_string()
            } else {
                silent.join(", ")
            }
        )
    }
}

/// Rounds a device sits out after its `misses`-th missed deadline in a row.
fn backoff(misses: u32) -> u64 {
    1 << misses.saturating_sub(1).min(4)
}

impl<T: Task + 'static> FlApp<T>
where
    T::Data: 'static,
{
    /// The app, continuing from the state in `settings.state_dir` if there is one (the
    /// directory is locked for as long as the app lives).
    pub fn new(task: T, test: T::Data, settings: FlSettings) -> Result<Self, StateError> {
        let task_name = task.name();
        let update_bytes = update_bytes_bound(task.layout(), settings.codec);
        let core = RunCore::load(task, test, settings)?;
        let members = Membership::restore(&core.state.members, core.settings.max_examples);
        Ok(Self {
            core: Arc::new(Mutex::new(core)),
            task_name,
            started: None,
            views: HashMap::new(),
            misses: HashMap::new(),
            members,
            aborted: AbortStreak::default(),
            update_bytes,
        })
    }

    /// The run, for the hub between rounds (a commit that panicked leaves it as it was
    /// when it stopped: the hub then starts no more rounds).
    fn core(&self) -> MutexGuard<'_, RunCore<T>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last round run (committed or aborted).
    pub fn round(&self) -> u64 {
        self.core().state.round
    }

    /// Rounds committed.
    pub fn committed(&self) -> u64 {
        self.core().state.committed
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

    /// Counts an aborted round of `participants`, of whom `delivered` reported, in the
    /// streak; at `max_aborted` in a row no more rounds start, and one line says who
    /// never reported.
    fn note_abort(&mut self, participants: &[NodeName], delivered: &[NodeName]) {
        let (max_aborted, min_updates) = {
            let core = self.core();
            (core.settings.max_aborted, core.settings.min_updates)
        };
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
        if streak.rounds == max_aborted {
            let line = streak.stopped(min_updates);
            warn!("{line}");
            println!("fl: {line}");
        }
    }

    /// Why no more rounds will run: the last one committed, aborts in a row, or the
    /// privacy budget (`None` while rounds go on).
    fn end(&self, core: &RunCore<T>) -> Option<String> {
        let committed = core.state.committed;
        if committed >= core.settings.rounds {
            return Some(format!("the run is over: {committed} rounds committed"));
        }
        if self.aborted.rounds >= core.settings.max_aborted {
            return Some(self.aborted.stopped(core.settings.min_updates));
        }
        if core
            .dp
            .as_ref()
            .is_some_and(CentralDp::next_round_exceeds_target)
        {
            return Some(format!(
                "the run is over: one more round would pass --dp-epsilon ({committed} rounds committed)"
            ));
        }
        None
    }

    /// The hub's side of an aborted round: who missed it sits out; the job records the
    /// round id.
    fn aborted_job(&mut self, round: u64, delivered: Vec<NodeName>) -> RoundJob {
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
        let (core, members) = (self.core.clone(), self.members.to_saved());
        Box::new(move || {
            let mut core = core.lock().unwrap_or_else(PoisonError::into_inner);
            core.abort(round, members);
        })
    }

    /// The hub's side of a committed round: its figures, who delivered, each update's
    /// weight (what its device declared); the job validates, aggregates and commits.
    fn committed_job(
        &mut self,
        round: u64,
        updates: Vec<(NodeName, tandem_runtime::wire::Update, Vec<u8>)>,
    ) -> RoundJob {
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
            _ => (0.0, 0, self.core().settings.per_round),
        };
        // A device weighs at most what its first Join declared.
        let updates = updates
            .into_iter()
            .map(|(node, update, bytes)| {
                let weight = self.members.weight(&node, update.num_examples);
                (node, update, bytes, weight)
            })
            .collect();
        let ended = EndedRound {
            round,
            updates,
            seconds,
            downlink_bytes,
            sampled,
            members: self.members.to_saved(),
        };
        let core = self.core.clone();
        Box::new(move || {
            let mut core = core.lock().unwrap_or_else(PoisonError::into_inner);
            core.commit_round(ended);
        })
    }
}

impl<T: Task + 'static> CloudApp for FlApp<T>
where
    T::Data: 'static,
{
    fn capabilities(&self) -> Capabilities {
        Capabilities::FL
    }

    fn admit(&mut self, hello: &Hello) -> Result<Admitted, Refused> {
        if !hello.capabilities.contains(Capabilities::FL) {
            return Err("this cloud serves federated learning only".into());
        }
        if hello.model.name.as_str() != self.task_name {
            return Err(format!(
                "this cloud runs task '{}', not '{}'",
                self.task_name, hello.model.name
            )
            .into());
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
        let min_updates = self.core().settings.min_updates;
        RoundQuorum {
            participants: min_updates,
            min_updates,
        }
    }

    fn participants(&mut self, available: &[NodeName]) -> Vec<NodeName> {
        let (next, seed, per_round) = {
            let core = self.core();
            (
                core.state.round + 1,
                core.settings.seed,
                core.settings.per_round,
            )
        };
        let (mut live, mut resting): (Vec<NodeName>, Vec<NodeName>) = available
            .iter()
            .cloned()
            .partition(|node| self.misses.get(node).is_none_or(|&(_, until)| until < next));
        let mut rng = SplitMix64::derive(seed, next);
        rng.shuffle(&mut live);
        rng.shuffle(&mut resting);
        // Devices sitting out fill the round only where the live ones are too few.
        let mut pool = live;
        pool.extend(resting);
        pool.truncate(per_round);
        pool.sort();
        pool
    }

    fn run_over(&self) -> Option<String> {
        self.end(&self.core())
    }

    fn round_tasks(
        &mut self,
        _hub_round: u64,
        participants: &[NodeName],
    ) -> Option<Vec<Assignment>> {
        let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(end) = self.end(&core) {
            info!(round = core.state.round, "no more rounds: {end}");
            return None;
        }
        // Every noised model that leaves has its charge on disk: a cloud that cannot save
        // the account releases nothing more.
        if let Some(dp) = &core.dp
            && let Err(err) = dp.save(&core.settings.state_dir)
        {
            warn!("privacy account not saved ({err}): no more rounds");
            return None;
        }
        let round = core.state.round + 1;
        let mut started = Started {
            round,
            at: Instant::now(),
            downlink_bytes: 0,
            participants: participants.to_vec(),
            sent: HashMap::new(),
        };
        let factors = core.state.factors.as_ref().map(SharedFactors::to_bytes);
        let factors = factors.unwrap_or_default();
        let mut assignments = Vec::with_capacity(participants.len());
        // The whole model is the same for every device that gets it: encoded once.
        let mut whole: Option<(CodecDesc, Sent)> = None;
        for node in participants {
            let (model_codec, sent) = match (self.views.get(node), &whole) {
                (Some(base), _) => core.encode_model(node, Some(base), round)?,
                (None, Some(whole)) => whole.clone(),
                (None, None) => whole.insert(core.encode_model(node, None, round)?).clone(),
            };
            let task = RoundTask {
                round,
                deadline_ms: core.settings.deadline.as_millis() as u64,
                config: core.settings.local.round_config(),
                model: sent.payload,
                model_codec,
                update_codec: core.settings.codec,
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
        drop(core);
        self.started = Some(started);
        Some(assignments)
    }

    /// Commits here, on the caller's thread (the hub runs [`Self::round_job`] on a
    /// worker instead).
    fn round_ended(&mut self, outcome: RoundOutcome) {
        (self.round_job(outcome))();
    }

    fn round_job(&mut self, outcome: RoundOutcome) -> RoundJob {
        match outcome {
            RoundOutcome::Committed { round, updates } => self.committed_job(round, updates),
            RoundOutcome::Aborted { round, delivered } => self.aborted_job(round, delivered),
        }
    }
}

#[cfg(test)]
mod tests;
