//! One federated round, both sides.
//!
//! The cloud ([`RoundCoordinator`]) sends a [`RoundTask`] to every participant, accepts
//! at most one [`Update`] per node for this round, and at the deadline commits (enough
//! updates) or aborts; it commits early once every participant has reported. Updates for
//! another round, from a node that is not a participant, claiming another node than the
//! connection's certificate, or arriving after the end are refused and counted, never
//! aggregated. Every participant gets the [`RoundResult`].
//!
//! A device ([`RoundClient`]) trains on the task, then sends its update and resends it
//! (same round) with backoff until the round's result arrives or the deadline passes,
//! so a lost update or a reconnect costs a resend, never a double count. A task for that
//! round arriving again (a restarted cloud runs the round anew) is handed to the
//! application again at once.

use super::Envelope;
use crate::wire::{NodeName, RoundResult, RoundTask, Update};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A message for one participant.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The device it is for.
    pub to: NodeName,
    /// The message.
    pub envelope: Envelope,
}

/// Why an update was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// For another round.
    StaleRound,
    /// From a node that is not a participant of this round.
    NotParticipant,
    /// Its `node` field differs from the connection's authenticated node.
    Spoofed,
    /// This node already reported (a resend): counted once.
    Duplicate,
    /// The round already ended.
    Late,
}

/// What the cloud application must act on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CoordinatorEvent {
    /// The round committed: aggregate these updates (one per node, in node order).
    Committed {
        /// The round.
        round: u64,
        /// (node, update, encoded tensor) for every accepted update.
        updates: Vec<(NodeName, Update, Vec<u8>)>,
    },
    /// Too few updates by the deadline: the round is void.
    Aborted {
        /// The round.
        round: u64,
        /// The participants whose updates had arrived, in node order (the others missed
        /// the deadline).
        delivered: Vec<NodeName>,
    },
    /// An update was refused (also counted in the round result).
    Refused {
        /// The authenticated sender.
        from: NodeName,
        /// Why.
        reason: Refusal,
    },
}

/// The cloud side of one round.
pub struct RoundCoordinator {
    round: u64,
    deadline: Instant,
    min_updates: usize,
    /// Each participant's task (the model payload may differ per device).
    tasks: BTreeMap<NodeName, Envelope>,
    accepted: BTreeMap<NodeName, (Update, Vec<u8>)>,
    accepted_count: u32,
    rejected: u32,
    /// `Some(committed)` once the round ended.
    outcome: Option<bool>,
    outbox: VecDeque<Outgoing>,
    events: VecDeque<CoordinatorEvent>,
}

/// One participant's task and its encoded model.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// The device.
    pub to: NodeName,
    /// Its task.
    pub task: RoundTask,
    /// The encoded model (or delta) that follows it.
    pub model: Vec<u8>,
}

impl Assignment {
    /// The same task and model for every one of `participants`.
    pub fn same_for_all(task: &RoundTask, model: &[u8], participants: &[NodeName]) -> Vec<Self> {
        participants
            .iter()
            .map(|to| Assignment {
                to: to.clone(),
                task: task.clone(),
                model: model.to_vec(),
            })
            .collect()
    }
}

impl RoundCoordinator {
    /// Starts the round: the task (its `deadline_ms` sets the deadline from `now`) and
    /// model go to every participant. It commits with at least `min_updates` updates.
    pub fn start(
        now: Instant,
        task: RoundTask,
        model: Vec<u8>,
        participants: Vec<NodeName>,
        min_updates: usize,
    ) -> Self {
        let (round, deadline_ms) = (task.round, task.deadline_ms);
        let assignments = Assignment::same_for_all(&task, &model, &participants);
        Self::start_each(now, round, deadline_ms, assignments, min_updates)
    }

    /// Starts round `round`, closing `deadline_ms` from `now`, with a task of its own for
    /// each participant (the tasks' `round` and `deadline_ms` are set to the round's).
    pub fn start_each(
        now: Instant,
        round: u64,
        deadline_ms: u64,
        assignments: Vec<Assignment>,
        min_updates: usize,
    ) -> Self {
        let deadline = now + Duration::from_millis(deadline_ms);
        let mut tasks = BTreeMap::new();
        let mut outbox = VecDeque::new();
        for Assignment {
            to,
            mut task,
            model,
        } in assignments
        {
            task.round = round;
            task.deadline_ms = deadline_ms;
            let envelope = Envelope::RoundTask(task, model);
            outbox.push_back(Outgoing {
                to: to.clone(),
                envelope: envelope.clone(),
            });
            tasks.insert(to, envelope);
        }
        Self {
            round,
            deadline,
            min_updates,
            tasks,
            accepted: BTreeMap::new(),
            accepted_count: 0,
            rejected: 0,
            outcome: None,
            outbox,
            events: VecDeque::new(),
        }
    }

    /// The round's participants, in name order.
    pub fn participants(&self) -> impl Iterator<Item = &NodeName> {
        self.tasks.keys()
    }

    /// `node`'s task, while the round waits for its update (a participant that
    /// reconnects may have lost it).
    pub fn task_for(&self, node: &NodeName) -> Option<&Envelope> {
        self.awaits(node).then(|| self.tasks.get(node)).flatten()
    }

    /// A message from the device whose certificate names `from`.
    pub fn handle_message(&mut self, now: Instant, from: &NodeName, envelope: Envelope) {
        let Envelope::Update(update, tensor) = envelope else {
            return;
        };
        let refusal = if self.outcome.is_some() {
            Some(Refusal::Late)
        } else if update.round != self.round {
            Some(Refusal::StaleRound)
        } else if &update.node != from {
            Some(Refusal::Spoofed)
        } else if !self.tasks.contains_key(from) {
            Some(Refusal::NotParticipant)
        } else if self.accepted.contains_key(from) {
            Some(Refusal::Duplicate)
        } else {
            None
        };
        match refusal {
            Some(reason) => {
                // A duplicate is a resend of an accepted update, not a bad one.
                if reason != Refusal::Duplicate {
                    self.rejected = self.rejected.saturating_add(1);
                }
                self.events.push_back(CoordinatorEvent::Refused {
                    from: from.clone(),
                    reason,
                });
                // The device missed the result: tell it again, once while one waits to go
                // out (late updates sent in a loop queue nothing more).
                let queued =
                    |o: &Outgoing| o.to == *from && matches!(o.envelope, Envelope::RoundResult(_));
                if let Some(committed) = self.outcome
                    && self.tasks.contains_key(from)
                    && !self.outbox.iter().any(queued)
                {
                    self.outbox.push_back(Outgoing {
                        to: from.clone(),
                        envelope: Envelope::RoundResult(self.result(committed)),
                    });
                }
            }
            None => {
                self.accepted.insert(from.clone(), (update, tensor));
                self.accepted_count += 1;
                if self.accepted.len() == self.tasks.len() {
                    self.end(now);
                }
            }
        }
    }

    /// Time passed: at the deadline the round commits or aborts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            self.end(now);
        }
    }

    fn result(&self, committed: bool) -> RoundResult {
        RoundResult {
            round: self.round,
            committed,
            accepted: self.accepted_count,
            rejected: self.rejected,
        }
    }

    fn end(&mut self, _now: Instant) {
        let committed = self.accepted.len() >= self.min_updates;
        self.outcome = Some(committed);
        let result = self.result(committed);
        for to in self.tasks.keys() {
            self.outbox.push_back(Outgoing {
                to: to.clone(),
                envelope: Envelope::RoundResult(result.clone()),
            });
        }
        let round = self.round;
        let accepted = std::mem::take(&mut self.accepted);
        self.events.push_back(if committed {
            let updates = accepted
                .into_iter()
                .map(|(node, (update, tensor))| (node, update, tensor))
                .collect();
            CoordinatorEvent::Committed { round, updates }
        } else {
            CoordinatorEvent::Aborted {
                round,
                delivered: accepted.into_keys().collect(),
            }
        });
    }

    /// Whether `node` is a participant whose update has not arrived.
    pub fn awaits(&self, node: &NodeName) -> bool {
        self.outcome.is_none() && self.tasks.contains_key(node) && !self.accepted.contains_key(node)
    }

    /// Whether the round has committed or aborted.
    pub fn is_ended(&self) -> bool {
        self.outcome.is_some()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.outbox.pop_front()
    }

    /// When [`RoundCoordinator::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outcome.is_none().then_some(self.deadline)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<CoordinatorEvent> {
        self.events.pop_front()
    }
}

/// What the device application must act on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Train on this task and call [`RoundClient::submit_update`].
    Train {
        /// The task.
        task: RoundTask,
        /// Its encoded model.
        model: Vec<u8>,
    },
    /// The round ended (committed or not).
    Ended(RoundResult),
    /// The round's deadline passed without a result: the update may be lost.
    Expired {
        /// The round.
        round: u64,
    },
}

struct Pending {
    envelope: Envelope,
    round: u64,
    next_resend: Instant,
    wait: Duration,
    deadline: Instant,
}

/// The device side of rounds.
pub struct RoundClient {
    resend_after: Duration,
    /// The round whose task was handed to the application, and its deadline.
    current: Option<(u64, Instant)>,
    /// The highest round that ended (results for older rounds are ignored).
    last_ended: Option<u64>,
    pending: Option<Pending>,
    outbox: VecDeque<Envelope>,
    events: VecDeque<ClientEvent>,
}

impl RoundClient {
    /// A client that resends an unanswered update after `resend_after`, doubling.
    pub fn new(resend_after: Duration) -> Self {
        Self {
            resend_after,
            current: None,
            last_ended: None,
            pending: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A message from the cloud.
    pub fn handle_message(&mut self, now: Instant, envelope: Envelope) {
        match envelope {
            Envelope::RoundTask(task, model) => {
                let ended = self.last_ended.is_some_and(|ended| task.round <= ended);
                let fresh = self.current.is_none_or(|(round, _)| task.round > round);
                // The round whose update awaits its result, asked for again: the cloud
                // restarted (or lost the update) and runs the round anew. The
                // application answers again (a device that trained on the same model
                // sends the same bytes, see `fl::client`) and the resends start over
                // rather than wait out a backoff grown while the cloud was away.
                let asked_again = self.pending.as_ref().is_some_and(|p| p.round == task.round);
                if !ended && (fresh || asked_again) {
                    let deadline = now + Duration::from_millis(task.deadline_ms);
                    self.current = Some((task.round, deadline));
                    self.pending = None;
                    self.events.push_back(ClientEvent::Train { task, model });
                }
            }
            Envelope::RoundResult(result) => {
                if self.last_ended.is_some_and(|ended| result.round <= ended) {
                    return;
                }
                self.last_ended = Some(result.round);
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.round == result.round)
                {
                    self.pending = None;
                }
                self.events.push_back(ClientEvent::Ended(result));
            }
            _ => {}
        }
    }

    /// The application's update for the current round.
    pub fn submit_update(&mut self, now: Instant, update: Update, tensor: Vec<u8>) {
        let round = update.round;
        let deadline = match self.current {
            Some((current, deadline)) if current == round => deadline,
            _ => return,
        };
        let envelope = Envelope::Update(update, tensor);
        self.outbox.push_back(envelope.clone());
        self.pending = Some(Pending {
            envelope,
            round,
            next_resend: now + self.resend_after,
            wait: self.resend_after,
            deadline,
        });
    }

    /// The connection was re-established: resend the unanswered update at once.
    pub fn handle_reconnect(&mut self, now: Instant) {
        if let Some(pending) = &mut self.pending {
            self.outbox.push_back(pending.envelope.clone());
            pending.next_resend = now + pending.wait;
        }
    }

    /// Time passed: resend the unanswered update, or give up after the deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        if now >= pending.deadline {
            let round = pending.round;
            self.pending = None;
            self.events.push_back(ClientEvent::Expired { round });
        } else if now >= pending.next_resend {
            self.outbox.push_back(pending.envelope.clone());
            pending.wait *= 2;
            pending.next_resend = now + pending.wait;
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    /// When [`RoundClient::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.next_resend.min(p.deadline))
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
