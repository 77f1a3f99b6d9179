//! `tandem-cloud simulate`: many virtual clients in one process, in the way of FedML
//! Parrot. Each round samples clients with a seed; a small pool of workers trains them one
//! after another; every update goes through the same task, update codec (with the
//! client's own codec state), validation and strategy code as a networked round, and its
//! bytes are counted exactly as they would cross the wire (frame headers and chunk
//! headers included). Memory grows only with per-client codec state.

use super::adapt::{self, Plan, Profiles};
use super::apply::{RoundNoise, apply_round};
use super::byzantine::Byzantine;
use super::central_dp::{CentralDp, DpSettings, seeded_normals};
use super::record::{RoundRecord, mean_train_loss};
use super::round_bounds::{MedianCaps, RoundUpdates};
use super::secure::{self, SecAggConfig};
use super::strategy::ClientUpdate;
use super::strategy::{Strategy, StrategySpec};
use super::validate::{NormBound, Refusal, validate};
use rayon::prelude::*;

mod centralised;
pub use centralised::Centralised;
use std::collections::HashMap;
use std::time::Instant;
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::fl::task::{Evaluation, LocalConfig, Task, TaskError};
use tandem_runtime::fl::update::{UpdateEncoder, UpdateError, identity_len};
use tandem_runtime::rng::SplitMix64;
use tandem_runtime::wire::{self, CodecDesc, ModelPayload, NodeName, RoundTask, Update, WireError};

/// The settings of a simulation.
#[derive(Clone, Debug)]
pub struct SimulationConfig {
    /// Clients sampled per round.
    pub per_round: usize,
    /// Local training.
    pub local: LocalConfig,
    /// Update codec.
    pub codec: CodecDesc,
    /// Aggregation.
    pub strategy: StrategySpec,
    /// Update norm bound.
    pub bound: Option<NormBound>,
    /// Hostile clients, if any.
    pub byzantine: Option<Byzantine>,
    /// The example count hostile clients claim (`None`: what they trained on).
    pub byzantine_examples: Option<u64>,
    /// How far a round's updates may go past its medians (as `serve --app fl`'s
    /// `--median-caps`; off by default here: a simulation's clients are the operator's
    /// own code).
    pub median_caps: MedianCaps,
    /// Seed of the model, the sampling and the local batch orders.
    pub seed: u64,
    /// Threads training clients side by side.
    pub workers: usize,
    /// Central differential privacy, if asked for.
    pub dp: Option<DpSettings>,
    /// Rounds between evaluations of the global model (1: every round); the run's last
    /// round (`rounds`, or the last one a privacy target allows) is always evaluated.
    pub eval_every: u64,
    /// Rounds the run means to take.
    pub rounds: u64,
    /// Devices of different speeds and uplinks, and a deadline, if modelled.
    pub devices: Option<Devices>,
    /// Secure aggregation of each round's updates, if asked for.
    pub secagg: Option<SecAggConfig>,
}

/// A simulated population of heterogeneous devices ([`super::adapt`]).
#[derive(Clone, Debug)]
pub struct Devices {
    /// The device classes.
    pub profiles: Profiles,
    /// Simulated seconds a round gives its devices.
    pub deadline_s: f64,
    /// Whether devices adapt their steps and compression to the deadline.
    pub adapt: bool,
}

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulationError {
    /// Settings that cannot run.
    #[error("{0}")]
    Config(String),
    /// Local training failed.
    #[error("client {client}: {error}")]
    Task {
        /// The client.
        client: usize,
        /// What the task said.
        error: TaskError,
    },
    /// The test set could not be evaluated.
    #[error("evaluation: {0}")]
    Evaluation(TaskError),
    /// An update could not be encoded.
    #[error("client {client}: {error}")]
    Encode {
        /// The client.
        client: usize,
        /// What the encoder said.
        error: UpdateError,
    },
    /// A message could not be framed.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A simulation in progress.
pub struct Simulation<'a, T: Task> {
    task: &'a T,
    clients: &'a [T::Data],
    test: &'a T::Data,
    config: SimulationConfig,
    global: Vec<f32>,
    strategy: Box<dyn Strategy>,
    /// Each client's encoders, one per codec it has sent with (codec state is per codec).
    encoders: HashMap<(usize, CodecDesc), UpdateEncoder>,
    /// Each client's device class, and the adaptation ladder (with `config.devices`).
    classes: Vec<usize>,
    ladder: Vec<(CodecDesc, usize)>,
    /// The round's shared factors (ACP codec only).
    factors: Option<SharedFactors>,
    hostile: Vec<bool>,
    round: u64,
    /// Central DP and the privacy spent (with `config.dp`).
    dp: Option<CentralDp>,
}

/// One client's trained and encoded update.
struct Trained {
    client: usize,
    codec: CodecDesc,
    bytes: Vec<u8>,
    examples: u64,
    loss: f32,
}

impl<'a, T: Task> Simulation<'a, T> {
    /// A simulation of `clients` (one data set each), evaluated on `test`.
    pub fn new(
        task: &'a T,
        clients: &'a [T::Data],
        test: &'a T::Data,
        config: SimulationConfig,
    ) -> Result<Self, SimulationError> {
        if clients.is_empty() || !(1..=clients.len()).contains(&config.per_round) {
            return Err(SimulationError::Config(format!(
                "{} clients per round of {} clients",
                config.per_round,
                clients.len()
            )));
        }
        if config.per_round < config.strategy.min_updates() {
            return Err(SimulationError::Config(format!(
                "{} needs at least {} clients per round, not {}",
                config.strategy,
                config.strategy.min_updates(),
                config.per_round
            )));
        }
        config
            .local
            .check()
            .map_err(|e| SimulationError::Config(e.to_string()))?;
        if config.workers == 0 || config.eval_every == 0 {
            return Err(SimulationError::Config(
                "at least one worker, and an evaluation every 1 or more rounds".into(),
            ));
        }
        // Checks the codec against the model once, before any training.
        UpdateEncoder::new(task.layout().clone(), config.codec)
            .map_err(|error| SimulationError::Encode { client: 0, error })?;
        let hostile = match &config.byzantine {
            Some(b) => b.choose(clients.len(), config.seed),
            None => vec![false; clients.len()],
        };
        let factors = match config.codec {
            CodecDesc::Acp { .. } => Some(
                SharedFactors::initial(task.layout(), config.codec, config.seed)
                    .map_err(|e| SimulationError::Config(e.to_string()))?,
            ),
            _ => None,
        };
        let dp = match &config.dp {
            Some(settings) => {
                let clip = match config.bound {
                    Some(NormBound::Clip(c)) => Some(c),
                    _ => None,
                };
                let clip = settings
                    .check(clip, &config.strategy)
                    .map_err(SimulationError::Config)?;
                Some(CentralDp::new(
                    *settings,
                    clip,
                    config.per_round,
                    clients.len(),
                ))
            }
            None => None,
        };
        if let Some(secagg) = &config.secagg {
            secagg
                .check(&config.strategy)
                .map_err(SimulationError::Config)?;
            if config.codec != CodecDesc::Identity || config.dp.is_some() {
                return Err(SimulationError::Config(
                    "--secagg sends fixed-point updates: it takes neither --codec nor central DP"
                        .into(),
                ));
            }
        }
        let (classes, ladder) = match &config.devices {
            Some(devices) => {
                let ladder = adapt::ladder(task.layout(), config.codec).ok_or_else(|| {
                    SimulationError::Config(
                        "device profiles need a codec of known size (not acp)".into(),
                    )
                })?;
                let valid = devices.deadline_s.is_finite()
                    && devices.deadline_s > 0.0
                    && devices.deadline_s <= 86_400.0;
                if !valid {
                    return Err(SimulationError::Config(format!(
                        "a deadline of {} s: expected 0 < seconds <= 86400",
                        devices.deadline_s
                    )));
                }
                (devices.profiles.assign(clients.len(), config.seed), ladder)
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(Self {
            task,
            clients,
            test,
            dp,
            classes,
            ladder,
            global: task.initial_weights(config.seed),
            strategy: config.strategy.build(),
            encoders: HashMap::new(),
            factors,
            hostile,
            round: 0,
            config,
        })
    }

    /// The current global model.
    pub fn global(&self) -> &[f32] {
        &self.global
    }

    /// Whether the next round would take the privacy spent past `--dp-epsilon` (the run
    /// stops before it).
    pub fn privacy_exhausted(&self) -> bool {
        self.dp
            .as_ref()
            .is_some_and(CentralDp::next_round_exceeds_target)
    }

    /// Evaluates the current global model on the test set.
    pub fn evaluate(&self) -> Result<Evaluation, SimulationError> {
        self.task
            .evaluate(&self.global, self.test)
            .map_err(SimulationError::Evaluation)
    }

    /// The clients of `round`: `per_round` distinct ones, from the seed, in the order of
    /// their device names (`sim-10` before `sim-2`), the order a networked round
    /// aggregates its updates in, so a round's aggregate does not depend on which path
    /// ran it.
    fn sample(&self, round: u64) -> Vec<usize> {
        let mut rng = SplitMix64::derive(self.config.seed, round);
        let mut ids: Vec<usize> = (0..self.clients.len()).collect();
        for i in 0..self.config.per_round {
            let j = i + rng.below(ids.len() - i);
            ids.swap(i, j);
        }
        ids.truncate(self.config.per_round);
        ids.sort_by_cached_key(|&client| node_name(client));
        ids
    }

    /// The local steps of a full round's work on `client`'s data.
    fn full_steps(&self, client: usize) -> u64 {
        let examples = self.task.examples(&self.clients[client]);
        examples.div_ceil(u64::from(self.config.local.batch)) * u64::from(self.config.local.epochs)
    }

    /// The sampled clients' plans under the device model (`None` without one).
    fn plans(&self, sampled: &[usize]) -> Option<Vec<Plan>> {
        let devices = self.config.devices.as_ref()?;
        Some(
            sampled
                .iter()
                .map(|&c| {
                    let class = &devices.profiles.classes[self.classes[c]];
                    adapt::plan(
                        c,
                        class,
                        self.full_steps(c),
                        &self.ladder,
                        devices.deadline_s,
                        devices.adapt,
                    )
                })
                .collect(),
        )
    }

    /// Trains `client` from the global model, for its full local work or, with `cut`,
    /// that many steps (a plan's, fewer than the full work), and encodes its delta with
    /// `encoder`.
    fn train(
        &self,
        client: usize,
        cut: Option<u64>,
        encoder: &mut UpdateEncoder,
    ) -> Result<Trained, SimulationError> {
        let seed = SplitMix64::derive(self.config.seed ^ 0x5eed, self.round)
            .next_u64()
            .wrapping_add(client as u64);
        // Fewer steps than the full work: the first `cut` steps of it.
        let local = LocalConfig {
            max_steps: cut,
            ..self.config.local
        };
        let result = self
            .task
            .train(&self.global, &self.clients[client], &local, seed)
            .map_err(|error| SimulationError::Task { client, error })?;
        let mut delta: Vec<f32> = result
            .weights
            .iter()
            .zip(&self.global)
            .map(|(w, g)| w - g)
            .collect();
        if self.hostile[client]
            && let Some(b) = &self.config.byzantine
        {
            b.corrupt(&mut delta, seed);
        }
        let bytes = encoder
            .encode_shared(&delta, self.factors.as_ref())
            .map_err(|error| SimulationError::Encode { client, error })?;
        let examples = match (self.hostile[client], self.config.byzantine_examples) {
            (true, Some(claimed)) => claimed,
            _ => result.examples,
        };
        Ok(Trained {
            client,
            codec: encoder.desc(),
            bytes,
            examples,
            loss: result.loss,
        })
    }

    /// Runs the next round: sample, train, encode, validate, aggregate, evaluate (every
    /// `eval_every` rounds).
    pub fn run_round(&mut self) -> Result<RoundRecord, SimulationError> {
        let started = Instant::now();
        self.round += 1;
        let round = self.round;
        let sampled = self.sample(round);
        let plans = self.plans(&sampled);
        // Each job: the client, its steps (None: the full work), its encoder.
        let mut jobs: Vec<(usize, Option<u64>, UpdateEncoder)> = Vec::new();
        for (i, &c) in sampled.iter().enumerate() {
            let plan = plans.as_ref().map(|p| &p[i]);
            if plan.is_some_and(|p| !p.reports()) {
                continue;
            }
            let codec = plan.map_or(self.config.codec, |p| p.codec);
            let encoder = match self.encoders.remove(&(c, codec)) {
                Some(e) => e,
                None => UpdateEncoder::new(self.task.layout().clone(), codec)
                    .map_err(|error| SimulationError::Encode { client: c, error })?,
            };
            let cut = plan.filter(|p| p.steps < p.full_steps).map(|p| p.steps);
            jobs.push((c, cut, encoder));
        }
        let per_worker = jobs.len().div_ceil(self.config.workers).max(1);
        let this = &*self;
        // The workers are tasks of rayon's pool, where burn's kernels also run their
        // parallel loops: a kernel called from a worker runs on that worker's thread when
        // the other is busy. Worker threads of their own would hand every kernel to the
        // pool and sleep until it is done (about 1.15 s against 0.97 s a round, LeNet).
        let trained: Vec<Result<Trained, SimulationError>> = jobs
            .par_chunks_mut(per_worker)
            .map(|chunk| {
                chunk
                    .iter_mut()
                    .map(|(c, steps, encoder)| this.train(*c, *steps, encoder))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect();
        // Codec state is kept whatever happened to the update.
        self.encoders
            .extend(jobs.into_iter().map(|(c, _, e)| ((c, e.desc()), e)));
        let factors_len = self.factors.as_ref().map_or(0, |f| f.to_bytes().len());
        let payload_len = identity_len(self.task.layout()) + factors_len;
        let task = self.round_task(round, payload_len, factors_len);
        let model_bytes = wire::wire_bytes(&task, payload_len)?;
        let mut record = RoundRecord {
            round,
            accuracy: None,
            loss: None,
            train_loss: None,
            sampled: sampled.len(),
            aggregated: 0,
            refused: 0,
            contributors: Vec::new(),
            dropped: 0,
            clipped: 0,
            uplink_bytes: 0,
            downlink_bytes: (model_bytes * sampled.len()) as u64,
            seconds: 0.0,
            epsilon: None,
            simulated_seconds: None,
            plans: Vec::new(),
        };
        if let (Some(plans), Some(devices)) = (plans, &self.config.devices) {
            record.dropped = plans.iter().filter(|p| !p.reports()).count();
            // The cloud waits for the deadline when someone does not report.
            let latest = plans.iter().map(|p| p.seconds).fold(0.0, f64::max);
            record.simulated_seconds = Some(if record.dropped > 0 {
                devices.deadline_s
            } else {
                latest
            });
            record.plans = plans;
        }
        let mut checked = RoundUpdates::default();
        for trained in trained {
            // A client that cannot train or encode (no examples, divergence, a non-finite
            // update it refuses to send) drops out of the round, as on a network.
            let trained = match trained {
                Ok(trained) => trained,
                Err(err) => {
                    tracing::warn!(round, "client dropped: {err}");
                    record.dropped += 1;
                    continue;
                }
            };
            let update = Update {
                round,
                node: node_name(trained.client),
                num_examples: trained.examples,
                train_loss: trained.loss,
                codec: trained.codec,
                payload_len: trained.bytes.len() as u64,
            };
            record.uplink_bytes += wire::wire_bytes(&update, trained.bytes.len())? as u64;
            match validate(
                trained.codec,
                self.factors.as_ref(),
                self.task.layout(),
                &trained.bytes,
                trained.examples,
                self.config.bound,
            ) {
                Ok(valid) => checked.accept(update.node, update.train_loss, valid),
                Err(refusal) => {
                    checked.refuse();
                    log_refusal(round, trained.client, &refusal);
                }
            }
        }
        checked.bound(self.config.median_caps);
        record.train_loss = mean_train_loss(&checked.train_losses);
        record.refused = checked.refused;
        record.clipped = checked.clipped();
        record.contributors = std::mem::take(&mut checked.contributors);
        let mut updates = checked.valid;
        if let Some(secagg) = &self.config.secagg {
            updates = self.secure_round(secagg, &updates, &mut record);
        }
        let noise = self.dp.as_mut().map(|dp| {
            let seed = SplitMix64::derive(self.config.seed ^ 0xd1ff_e2e7, round).next_u64();
            RoundNoise {
                dp,
                normals: seeded_normals(seed, self.global.len()),
            }
        });
        record.aggregated = apply_round(
            self.strategy.as_mut(),
            &mut self.global,
            &mut self.factors,
            self.task.layout(),
            &updates,
            noise,
            round,
            self.config.seed,
        );
        if self.config.secagg.is_some() && record.aggregated > 0 {
            record.aggregated = record.contributors.len();
        }
        record.epsilon = self.dp.as_ref().map(CentralDp::epsilon);
        let last = round >= self.config.rounds || self.privacy_exhausted();
        if last || round.is_multiple_of(self.config.eval_every) {
            let eval = self.evaluate()?;
            record.accuracy = Some(eval.accuracy);
            record.loss = Some(eval.loss);
        }
        record.seconds = started.elapsed().as_secs_f64();
        Ok(record)
    }

    /// The round's valid `updates` through secure aggregation: the survivors' mean as one
    /// update (none when the round cannot open), the record's bytes, contributors and
    /// drop-outs made the protocol's.
    fn secure_round(
        &self,
        secagg: &SecAggConfig,
        updates: &[ClientUpdate],
        record: &mut RoundRecord,
    ) -> Vec<ClientUpdate> {
        let round = record.round;
        let nodes = std::mem::take(&mut record.contributors);
        if updates.len() < 2 {
            tracing::warn!(
                round,
                "secure aggregation needs two updates or more: round skipped"
            );
            return Vec::new();
        }
        match secure::aggregate(secagg, updates, round, self.config.seed) {
            Ok(secure) => {
                record.uplink_bytes = secure.traffic.up_bytes;
                record.downlink_bytes += secure.traffic.down_bytes;
                record.dropped += secure.dropped;
                record.contributors = secure.survivors.iter().map(|&i| nodes[i].clone()).collect();
                vec![secure.mean]
            }
            Err(err) => {
                tracing::warn!(round, "secure aggregation did not open: {err}");
                Vec::new()
            }
        }
    }

    /// The RoundTask a networked cloud would send for `round` with a payload of
    /// `payload_len` bytes, `factors_len` of them shared factors (the simulation models
    /// the identity downlink only).
    fn round_task(&self, round: u64, payload_len: usize, factors_len: usize) -> RoundTask {
        RoundTask {
            round,
            deadline_ms: 60_000,
            config: self.config.local.round_config(),
            model: ModelPayload::Full,
            model_codec: CodecDesc::Identity,
            update_codec: self.config.codec,
            payload_len: payload_len as u64,
            factors_len: factors_len as u64,
        }
    }
}

fn log_refusal(round: u64, client: usize, refusal: &Refusal) {
    tracing::warn!(round, client, "update refused: {refusal}");
}

/// The node name of simulated client `i`.
fn node_name(i: usize) -> NodeName {
    let mut name = NodeName::new();
    // "sim-" and at most 6 digits: always within the 64 bytes of a NodeName.
    let _ = std::fmt::Write::write_fmt(&mut name, format_args!("sim-{i}"));
    name
}
