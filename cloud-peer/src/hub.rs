//! The session hub: one thread that owns every device's session machines and the
//! application, fed by the connection tasks.
//!
//! Per-node state (the split step cache, FL membership) outlives connections, so a
//! device that reconnects resumes where it was: a resent step is answered from the
//! cache, an update already counted is refused as a duplicate.

use crate::app::{Admitted, CloudApp, RoundOutcome};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tandem_runtime::session::Envelope;
use tandem_runtime::session::fl::{CoordinatorEvent, RoundCoordinator};
use tandem_runtime::session::split::{CloudEvent, SplitCloud};
use tandem_runtime::transport::InFlight;
use tandem_runtime::wire::{Capabilities, NodeName};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info, warn};

/// What the connection tasks tell the hub.
pub(crate) enum HubInput {
    /// A device completed its Hello on connection `id`; `outbox` writes to it.
    Connected {
        node: NodeName,
        id: u64,
        outbox: UnboundedSender<Outbound>,
    },
    /// A device's Hello, for the application to admit or refuse before HelloAck.
    Admit {
        hello: Box<tandem_runtime::wire::Hello>,
        reply: tokio::sync::oneshot::Sender<Result<Admitted, String>>,
    },
    /// A session message from a device, with its share of the device's budget of held
    /// tensor bytes (released once the hub has processed it).
    Message {
        node: NodeName,
        envelope: Envelope,
        held: InFlight,
    },
    /// Connection `id` of `node` ended.
    Disconnected { node: NodeName, id: u64 },
}

/// What the hub asks a connection's writer to do.
pub(crate) enum Outbound {
    /// Send this message on a new stream.
    Send(Envelope),
    /// Close the connection with `Unserved` and this reason (the application refused
    /// the device, or failed on its work).
    Refuse(String),
}

struct Hub<A> {
    app: A,
    served: Capabilities,
    connections: HashMap<NodeName, (u64, UnboundedSender<Outbound>)>,
    split: HashMap<NodeName, SplitCloud>,
    /// The device process each node's split machine serves (see `RunPlan::process`).
    processes: HashMap<NodeName, u64>,
    joined: BTreeMap<NodeName, u64>,
    round: Option<RoundCoordinator>,
    next_round: u64,
    rounds_over: bool,
}

/// Runs the hub until every sender of `inputs` is gone.
pub(crate) fn run<A: CloudApp>(app: A, inputs: Receiver<HubInput>) {
    let served = app.capabilities();
    let mut hub = Hub {
        app,
        served,
        connections: HashMap::new(),
        split: HashMap::new(),
        processes: HashMap::new(),
        joined: BTreeMap::new(),
        round: None,
        next_round: 1,
        rounds_over: false,
    };
    loop {
        let timeout = hub
            .round
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match inputs.recv_timeout(timeout) {
            Ok(input) => hub.handle(input),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        hub.poll_round(Instant::now());
    }
}

impl<A: CloudApp> Hub<A> {
    /// Feeds one input to the machines and runs what it made ready.
    fn handle(&mut self, input: HubInput) {
        let now = Instant::now();
        match input {
            HubInput::Connected { node, id, outbox } => {
                // A participant that reconnects before reporting may have lost its task.
                if let Some(task) = self.round.as_ref().and_then(|r| r.task_for(&node)) {
                    let _ = outbox.send(Outbound::Send(task.clone()));
                }
                self.connections.insert(node, (id, outbox));
            }
            HubInput::Admit { hello, reply } => {
                let admitted = isolated(&hello.node, "admitting", || self.app.admit(&hello))
                    .and_then(|verdict| verdict);
                let process = hello.plan.process;
                if admitted.is_ok()
                    && process != 0
                    && self.processes.insert(hello.node.clone(), process) != Some(process)
                {
                    // A restarted device numbers its steps afresh: an old step cache
                    // would take them for stale resends.
                    self.split.remove(&hello.node);
                }
                let _ = reply.send(admitted);
            }
            HubInput::Disconnected { node, id } => {
                if self
                    .connections
                    .get(&node)
                    .is_some_and(|(live, _)| *live == id)
                {
                    self.connections.remove(&node);
                }
            }
            // `held` is released when the message has been processed.
            HubInput::Message {
                node,
                envelope,
                held: _held,
            } => match envelope {
                Envelope::Activations(..) if self.served.contains(Capabilities::SPLIT) => {
                    self.split
                        .entry(node.clone())
                        .or_default()
                        .handle_message(now, envelope);
                    self.poll_split(&node);
                }
                Envelope::Join(join) if self.served.contains(Capabilities::FL) => {
                    if join.node != node {
                        warn!(%node, claims = %join.node, "Join for another node ignored");
                    } else if self
                        .joined
                        .insert(node.clone(), join.num_examples)
                        .is_none()
                    {
                        info!(%node, examples = join.num_examples, "joined");
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

    /// Runs the application on what `node`'s split machine produced and routes its output.
    fn poll_split(&mut self, node: &NodeName) {
        let now = Instant::now();
        let Some(machine) = self.split.get_mut(node) else {
            return;
        };
        while let Some(CloudEvent::Activations {
            activations,
            tensor,
        }) = machine.poll_event()
        {
            let app = &mut self.app;
            let step = isolated(node, "training a step of", || {
                app.split_step(node, &activations, &tensor)
            });
            match step {
                Ok(Ok((gradient, tensor))) => {
                    if let Err(err) = machine.send_gradient(now, gradient, tensor) {
                        warn!(%node, "application answered the wrong step: {err}");
                    }
                }
                Ok(Err(reason)) => {
                    warn!(%node, step = activations.step, "refused: {reason}");
                    refuse(&self.connections, node, reason);
                }
                Err(failure) => {
                    // Whatever the application held for this device may be half
                    // updated: it starts afresh if the device comes back.
                    self.split.remove(node);
                    self.processes.remove(node);
                    let app = &mut self.app;
                    let _ = isolated(node, "forgetting", || app.forget(node));
                    refuse(&self.connections, node, failure);
                    return;
                }
            }
        }
        while let Some(envelope) = machine.poll_transmit() {
            send(&self.connections, node, envelope);
        }
    }

    fn poll_round(&mut self, now: Instant) {
        if let Some(round) = &mut self.round {
            round.handle_timeout(now);
            // The app commits an ended round before any device hears its result: a
            // device told "committed" can rely on the cloud having it.
            while let Some(event) = round.poll_event() {
                let outcome = match event {
                    CoordinatorEvent::Committed { round, mut updates } => {
                        info!(round, updates = updates.len(), "round committed");
                        // A device weighs at most what it declared when it joined.
                        for (node, update, _) in &mut updates {
                            if let Some(&declared) = self.joined.get(node) {
                                update.num_examples = update.num_examples.min(declared);
                            }
                        }
                        RoundOutcome::Committed { round, updates }
                    }
                    CoordinatorEvent::Aborted { round, received } => {
                        warn!(round, received, "round aborted");
                        RoundOutcome::Aborted { round, received }
                    }
                    CoordinatorEvent::Refused { from, reason } => {
                        warn!(node = %from, ?reason, "update refused");
                        continue;
                    }
                    _ => continue,
                };
                let app = &mut self.app;
                if isolated("the federated rounds", "ending a round of", || {
                    app.round_ended(outcome)
                })
                .is_err()
                {
                    self.rounds_over = true;
                }
            }
            while let Some(out) = round.poll_transmit() {
                send(&self.connections, &out.to, out.envelope);
            }
        }
        // Results of an ended round are still resent to devices that repeat their
        // update, until the next round replaces it.
        let idle = self.round.as_ref().is_none_or(|r| r.is_ended());
        if !idle || self.rounds_over || self.joined.is_empty() {
            return;
        }
        let quorum = self.app.quorum();
        let app = &mut self.app;
        let available: Vec<NodeName> = self
            .joined
            .keys()
            .filter(|n| self.connections.contains_key(*n))
            .cloned()
            .collect();
        if available.len() >= quorum.participants.max(1) {
            let round = self.next_round;
            let tasks = isolated("the federated rounds", "starting a round of", || {
                let participants = app.participants(&available);
                app.round_tasks(round, &participants)
            });
            let Ok(Some(assignments)) = tasks else {
                self.rounds_over = true;
                info!("no more rounds");
                return;
            };
            let Some(first) = assignments.first() else {
                warn!(round, "the application assigned the round to no device");
                return;
            };
            let (number, deadline_ms) = (first.task.round, first.task.deadline_ms);
            self.next_round += 1;
            info!(
                round = number,
                participants = assignments.len(),
                "round started"
            );
            self.round = Some(RoundCoordinator::start_each(
                now,
                number,
                deadline_ms,
                assignments,
                quorum.min_updates,
            ));
            // Route the new round's tasks now.
            self.poll_round(now);
        }
    }
}

/// Closes `node`'s connection, if any, with `Unserved` and `reason`.
fn refuse(
    connections: &HashMap<NodeName, (u64, UnboundedSender<Outbound>)>,
    node: &NodeName,
    reason: String,
) {
    if let Some((_, outbox)) = connections.get(node) {
        let _ = outbox.send(Outbound::Refuse(reason));
    }
}

/// Runs the application's `work` for `subject` (a device), catching a panic: the other
/// devices go on, the panic is logged, and `Err` is one line for the device's operator.
fn isolated<T>(
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

fn send(
    connections: &HashMap<NodeName, (u64, UnboundedSender<Outbound>)>,
    to: &NodeName,
    envelope: Envelope,
) {
    // A device that is not connected gets it again when it resends or reconnects.
    if let Some((_, outbox)) = connections.get(to) {
        let _ = outbox.send(Outbound::Send(envelope));
    }
}
