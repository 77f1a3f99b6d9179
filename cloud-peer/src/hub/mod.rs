//! The session hub: one thread that owns every device's session machines and the
//! application, fed by the connection tasks; split steps run on worker threads
//! ([`crate::workers`]), so the hub answers admissions, rounds and other devices while
//! a device trains.
//!
//! Per-node state (the split step cache, FL membership) outlives connections, so a
//! device that reconnects resumes where it was: a resent step is answered from the
//! cache, an update already counted is refused as a duplicate. Admissions are in
//! [`admission`], federated rounds and the run's end in [`rounds`].

mod admission;
mod rounds;

use crate::app::{Admitted, CloudApp, ReadyStep, Refused, StepReply};
use crate::outbox::Outbox;
use crate::workers::{Admission, Devices, Fairness, JobResults, Workers};
use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use tandem_runtime::session::Envelope;
use tandem_runtime::session::fl::RoundCoordinator;
use tandem_runtime::session::split::{CloudEvent, SplitCloud};
use tandem_runtime::transport::InFlight;
use tandem_runtime::wire::{Capabilities, NodeName};
use tracing::{error, info, warn};

/// What the connection tasks tell the hub.
pub(crate) enum HubInput {
    /// A device completed its Hello on connection `id`; `outbox` writes to it.
    Connected {
        node: NodeName,
        id: u64,
        outbox: Outbox,
    },
    /// A device's Hello, for the application to admit or refuse before HelloAck.
    Admit {
        hello: Box<tandem_runtime::wire::Hello>,
        reply: AdmitReply,
    },
    /// A worker did the slow part of an admission ([`crate::app::AdmitJob::Build`]).
    AdmitBuilt(Admission),
    /// A session message from a device, with its share of the device's budget of held
    /// tensor bytes (released once the hub has processed it).
    Message {
        node: NodeName,
        envelope: Envelope,
        held: InFlight,
    },
    /// Connection `id` of `node` ended.
    Disconnected { node: NodeName, id: u64 },
    /// The server is done: stop.
    Shutdown,
    /// A worker ran a job: each of its devices' gradient or refusal, or `Err` when the
    /// application panicked on it.
    StepDone { results: JobResults },
    /// A worker committed round `round` (`failed`: the application panicked on it).
    RoundDone { round: u64, failed: Option<String> },
}

/// Where an admission's verdict goes (the connection waiting to send HelloAck).
pub(crate) type AdmitReply = tokio::sync::oneshot::Sender<Result<Admitted, Refused>>;

/// How the hub serves devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubSettings {
    /// Threads that run split steps (at least 1).
    pub workers: usize,
    /// A device gone this long is forgotten: the application frees what it held for it
    /// ([`CloudApp::forget`]) and its step cache goes.
    pub idle_release: Duration,
    /// Stop serving once the application's run is over ([`CloudApp::run_over`]), after
    /// its devices were told (`serve --app fl` without `--keep-serving`).
    pub stop_when_over: bool,
}

impl Default for HubSettings {
    /// One worker; devices released after 15 minutes away (longer than a device's link
    /// keeps reconnecting, 5 minutes by default).
    fn default() -> Self {
        Self {
            workers: 1,
            idle_release: Duration::from_secs(15 * 60),
            stop_when_over: false,
        }
    }
}

struct Hub<A> {
    app: A,
    served: Capabilities,
    connections: HashMap<NodeName, (u64, Outbox)>,
    split: HashMap<NodeName, SplitCloud>,
    /// The device process each node's split machine serves (see `RunPlan::process`).
    processes: HashMap<NodeName, u64>,
    /// Devices whose Join the application took.
    joined: BTreeSet<NodeName>,
    round: Option<RoundCoordinator>,
    /// The round whose commit runs on a worker: no round starts and none of its results
    /// go out before it is done.
    committing: Option<u64>,
    next_round: u64,
    rounds_over: bool,
    workers: Workers,
    fairness: Fairness,
    /// The run's last line once the devices were told it is over.
    over: Option<String>,
    /// Whether the run may have ended since [`CloudApp::run_over`] was last asked: at
    /// start-up and after each round's commit, the only moments it can (asking on every
    /// input would take the application's lock per message).
    may_be_over: bool,
    /// Told the run's last line when it is over, if the server stops then.
    stop: Option<tokio::sync::oneshot::Sender<String>>,
    /// Devices whose admission builds on the admission thread, each with the newer
    /// Hello waiting for it, if any.
    building: HashMap<NodeName, Option<Admission>>,
    /// Devices with no connection, since when.
    away: HashMap<NodeName, Instant>,
    idle_release: Duration,
}

/// Runs the hub until [`HubInput::Shutdown`] (`to_self` is a sender of `inputs`, for
/// the workers' results, so the channel alone never closes).
pub(crate) fn run<A: CloudApp>(
    app: A,
    settings: HubSettings,
    (inputs, to_self): (Receiver<HubInput>, Sender<HubInput>),
    stop: tokio::sync::oneshot::Sender<String>,
) {
    let workers = match Workers::start(settings.workers, to_self) {
        Ok(workers) => workers,
        Err(err) => {
            error!("cannot start the worker threads: {err}");
            return;
        }
    };
    let served = app.capabilities();
    let mut hub = Hub {
        app,
        served,
        connections: HashMap::new(),
        split: HashMap::new(),
        processes: HashMap::new(),
        joined: BTreeSet::new(),
        round: None,
        committing: None,
        next_round: 1,
        rounds_over: false,
        workers,
        fairness: Fairness::default(),
        building: HashMap::new(),
        over: None,
        may_be_over: true,
        stop: settings.stop_when_over.then_some(stop),
        away: HashMap::new(),
        idle_release: settings.idle_release,
    };
    // A run over before anyone connects (a cloud restarted on a finished run).
    hub.check_over();
    loop {
        let next_release = hub.away.values().min().map(|&left| left + hub.idle_release);
        let timeout = hub
            .round
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .into_iter()
            .chain(next_release)
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match inputs.recv_timeout(timeout) {
            Ok(HubInput::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(input) => hub.handle(input),
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        hub.release_idle(now);
        hub.poll_round(now);
        hub.check_over();
    }
    // A round being committed is finished before the process may exit.
    while hub.committing.is_some() {
        match inputs.recv_timeout(COMMIT_AT_SHUTDOWN) {
            Ok(HubInput::RoundDone { .. }) => hub.committing = None,
            Ok(_) => {}
            Err(_) => {
                warn!("a round's commit did not finish within {COMMIT_AT_SHUTDOWN:?} of shutdown");
                break;
            }
        }
    }
}

/// How long a shutdown waits for a round's commit under way.
const COMMIT_AT_SHUTDOWN: Duration = Duration::from_secs(120);

impl<A: CloudApp> Hub<A> {
    /// Feeds one input to the machines and runs what it made ready.
    fn handle(&mut self, input: HubInput) {
        let now = Instant::now();
        match input {
            HubInput::Connected { node, id, outbox } => {
                // A participant that reconnects before reporting may have lost its task.
                if let Some(task) = self.round.as_ref().and_then(|r| r.task_for(&node)) {
                    outbox.send(task.clone());
                }
                self.away.remove(&node);
                // One connection per device: a newer one (the device restarted, or a
                // copy of its identity floods connections) replaces the older, which is
                // closed rather than left holding a session nobody routes to.
                if let Some((old, older)) = self.connections.insert(node.clone(), (id, outbox))
                    && old != id
                {
                    info!(%node, "a newer connection replaces the older");
                    older.refuse("replaced by a newer connection of this device");
                }
            }
            // `run` stops on it before it gets here.
            HubInput::Shutdown => {}
            HubInput::RoundDone { round, failed } => {
                self.workers.finished();
                self.may_be_over = true;
                if self.committing == Some(round) {
                    self.committing = None;
                }
                if failed.is_some() {
                    // Not committed after all: the round's results ("committed") must not
                    // go out; its devices' waits end at the deadline.
                    self.rounds_over = true;
                    if let Some(round) = &mut self.round {
                        while round.poll_transmit().is_some() {}
                    }
                }
                // The worker is free for a step; `run` then polls the round, which sends
                // its results and starts the next.
                self.dispatch();
            }
            HubInput::StepDone { results } => {
                self.workers.finished();
                for (node, result) in results {
                    self.fairness.done(&node);
                    self.answer(&node, result);
                    // A newer step may have arrived meanwhile.
                    self.fairness.ready(&node);
                }
                self.dispatch();
            }
            HubInput::Admit { hello, reply } => self.admit(Admission { hello, reply }),
            HubInput::AdmitBuilt(Admission { hello, reply }) => {
                let app = &mut self.app;
                let verdict = isolated(&hello.node, "admitting", || app.admit_built(&hello))
                    .map_err(Refused::from)
                    .and_then(|verdict| verdict);
                self.admitted(&hello, verdict, reply);
                // The device's newer Hello that waited for this one's work.
                if let Some(Some(waiting)) = self.building.remove(&hello.node) {
                    self.admit(waiting);
                }
            }
            HubInput::Disconnected { node, id } => {
                if self
                    .connections
                    .get(&node)
                    .is_some_and(|(live, _)| *live == id)
                {
                    self.connections.remove(&node);
                    self.away.insert(node, now);
                }
            }
            // `held` is released once the message is in its machine, which keeps at
            // most one waiting step per device.
            HubInput::Message {
                node,
                envelope,
                held: _held,
            } => match envelope {
                Envelope::Activations(..) if self.served.contains(Capabilities::SPLIT) => {
                    let machine = self.split.entry(node.clone()).or_default();
                    machine.handle_message(now, envelope);
                    if let Some(flood) = machine.flood() {
                        warn!(%node, "refused: {flood}");
                        refuse(&self.connections, &node, flood.to_string());
                        return;
                    }
                    // A resent step is answered from the cache.
                    while let Some(envelope) = machine.poll_transmit() {
                        send(&self.connections, &node, envelope);
                    }
                    self.fairness.ready(&node);
                    self.dispatch();
                }
                Envelope::Join(join) if self.served.contains(Capabilities::FL) => {
                    if join.node != node {
                        warn!(%node, claims = %join.node, "Join for another node ignored");
                        return;
                    }
                    if let Some(line) = &self.over {
                        info!(%node, "joined after the run's end: {line}");
                        if let Some((_, outbox)) = self.connections.get(&node) {
                            outbox.finish(line);
                        }
                        return;
                    }
                    let examples = join.num_examples;
                    let app = &mut self.app;
                    match isolated(&node, "taking a Join of", || app.join(&node, examples))
                        .and_then(|verdict| verdict)
                    {
                        Ok(()) => {
                            if self.joined.insert(node.clone()) {
                                info!(%node, examples, "joined");
                            }
                        }
                        Err(reason) => {
                            warn!(%node, examples, "Join refused: {reason}");
                            self.joined.remove(&node);
                            refuse(&self.connections, &node, reason);
                        }
                    }
                }
                Envelope::Update(..) if self.served.contains(Capabilities::FL) => {
                    match &mut self.round {
                        Some(round) => round.handle_message(now, &node, envelope),
                        None => warn!(%node, "update outside any round ignored"),
                    }
                }
                other => {
                    warn!(%node, "ignored a {:?} message this cloud does not serve", other.kind())
                }
            },
        }
    }

    /// Hands ready devices' steps to free workers, in turn: one device's step per job,
    /// or as many as the application batches ([`CloudApp::batch_tokens`]).
    fn dispatch(&mut self) {
        let budget = self.app.batch_tokens();
        while self.workers.has_idle() {
            let steps = self.next_batch(budget);
            if steps.is_empty() {
                return;
            }
            let nodes: Vec<NodeName> = steps.iter().map(|s| s.node.clone()).collect();
            let app = &mut self.app;
            match isolated(Devices(&nodes), "preparing a step of", || {
                app.split_batch(steps)
            }) {
                Ok(job) => self.workers.run(nodes, job),
                Err(failure) => {
                    for node in &nodes {
                        self.fairness.done(node);
                        self.fail(node, failure.clone());
                    }
                }
            }
        }
    }

    /// The next ready steps, in turn, while their batches padded to the longest stay
    /// within `budget` tokens (at least one step; only one when `budget` is 0). A step
    /// that would pass the budget waits, first in line, for the next job.
    fn next_batch(&mut self, budget: u64) -> Vec<ReadyStep> {
        let mut steps: Vec<ReadyStep> = Vec::new();
        let (mut sequences, mut longest) = (0u64, 0u64);
        while let Some(node) = self.fairness.peek() {
            let size = match self.split.get(&node).and_then(SplitCloud::peek_event) {
                Some(CloudEvent::Activations { activations, .. }) => {
                    Some((u64::from(activations.batch), u64::from(activations.seq)))
                }
                _ => None,
            };
            let Some((batch, seq)) = size else {
                // Nothing to run after all (a resend answered from the cache).
                self.fairness.next();
                self.fairness.done(&node);
                continue;
            };
            let (b, s) = (sequences + batch, longest.max(seq));
            if !steps.is_empty() && b.saturating_mul(s) > budget {
                break;
            }
            self.fairness.next();
            let Some(CloudEvent::Activations {
                activations,
                tensor,
            }) = self.split.get_mut(&node).and_then(SplitCloud::poll_event)
            else {
                self.fairness.done(&node);
                continue;
            };
            (sequences, longest) = (b, s);
            steps.push(ReadyStep {
                node,
                activations,
                tensor,
            });
            if budget == 0 {
                break;
            }
        }
        steps
    }

    /// Routes a worker's `result` for `node`'s step.
    fn answer(&mut self, node: &NodeName, result: Result<StepReply, String>) {
        match result {
            Ok(Ok((gradient, tensor))) => {
                // A device restarted meanwhile has a new machine that asked nothing.
                let Some(machine) = self.split.get_mut(node) else {
                    return;
                };
                if let Err(err) = machine.send_gradient(Instant::now(), gradient, tensor) {
                    warn!(%node, "a step answered after the device moved on: {err}");
                }
                while let Some(envelope) = machine.poll_transmit() {
                    send(&self.connections, node, envelope);
                }
            }
            Ok(Err(reason)) => {
                warn!(%node, "refused: {reason}");
                refuse(&self.connections, node, reason);
            }
            Err(failure) => self.fail(node, failure),
        }
    }

    /// The application failed on `node`'s work: whatever it held for the device may be
    /// half updated, so it is dropped (a device that comes back starts afresh), and the
    /// device is refused with `reason`.
    fn fail(&mut self, node: &NodeName, reason: String) {
        self.forget(node);
        refuse(&self.connections, node, reason);
    }

    /// Drops `node`'s split machine and whatever the application holds for it.
    fn forget(&mut self, node: &NodeName) {
        self.split.remove(node);
        self.processes.remove(node);
        let app = &mut self.app;
        let _ = isolated(node, "forgetting", || app.forget(node));
    }

    /// Forgets devices away for the idle release time (not while a step of theirs runs).
    fn release_idle(&mut self, now: Instant) {
        let due: Vec<NodeName> = self
            .away
            .iter()
            .filter(|(node, left)| {
                now.duration_since(**left) >= self.idle_release && !self.fairness.is_running(node)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in due {
            self.away.remove(&node);
            info!(%node, "released after {} s away", self.idle_release.as_secs());
            self.forget(&node);
        }
    }
}

/// Closes `node`'s connection, if any, with `Unserved` and `reason`.
fn refuse(connections: &HashMap<NodeName, (u64, Outbox)>, node: &NodeName, reason: String) {
    if let Some((_, outbox)) = connections.get(node) {
        outbox.refuse(&reason);
    }
}

/// Runs the application's `work` for `subject` (a device), catching a panic: the other
/// devices go on, the panic is logged, and `Err` is one line for the device's operator.
pub(crate) fn isolated<T>(
    subject: impl std::fmt::Display,
    doing: &str,
    work: impl FnOnce() -> T,
) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        error!("the application failed {doing} {subject}: {what}");
        format!("the cloud failed {doing} this device ({what}); its operator has the log")
    })
}

fn send(connections: &HashMap<NodeName, (u64, Outbox)>, to: &NodeName, envelope: Envelope) {
    // A device that is not connected gets it again when it resends or reconnects; one
    // whose outbox is full has its connection closed by it.
    if let Some((_, outbox)) = connections.get(to) {
        outbox.send(envelope);
    }
}
