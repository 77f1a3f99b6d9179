//! The threads that run devices' split steps, rounds' commits and slow admissions off
//! the session hub, so admissions, round deadlines and every other device's messages
//! never wait behind a training step, an aggregation or a top being built.
//!
//! The hub hands a worker one job at a time (one device's step, or steps of several
//! devices that the application trains as one batch) and keeps at most one step per
//! device queued or running ([`Fairness`]): devices take turns in the order their
//! steps became ready, whatever their batch sizes. A panic in a job is caught on its
//! worker and reported as the failure of the devices in it.

use crate::app::{BatchJob, RoundJob, StepReply};
use crate::hub::{AdmitReply, HubInput, isolated};
use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use tandem_runtime::wire::{Hello, NodeName};

/// Work for a worker.
enum Task {
    /// Devices' steps to run as one job.
    Steps { nodes: Vec<NodeName>, job: BatchJob },
    /// A round's commit.
    Round { round: u64, job: RoundJob },
}

/// A device's Hello waiting for its admission's work, and where its verdict goes.
pub(crate) struct Admission {
    pub(crate) hello: Box<Hello>,
    pub(crate) reply: AdmitReply,
}

/// Each device's outcome of a job: its reply, or `Err` when the application panicked.
pub(crate) type JobResults = Vec<(NodeName, Result<StepReply, String>)>;

/// The pool: `size` threads taking tasks from one queue and reporting each result to the
/// hub as [`HubInput::StepDone`].
pub(crate) struct Workers {
    tasks: Sender<Task>,
    /// The admission thread's queue: admissions that build wait for each other, never
    /// for a step (nor a step for them).
    admissions: Sender<(Admission, RoundJob)>,
    /// Workers free, less jobs queued for none (a round's commit is queued even when
    /// every worker is busy): below 1, no step is dispatched.
    idle: i64,
}

impl Workers {
    /// Starts `size` (at least 1) worker threads reporting to `hub`.
    pub(crate) fn start(size: usize, hub: Sender<HubInput>) -> std::io::Result<Self> {
        let (tasks, queue) = std::sync::mpsc::channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        let size = size.max(1);
        for i in 0..size {
            let (queue, hub) = (queue.clone(), hub.clone());
            std::thread::Builder::new()
                .name(format!("tandem-worker-{i}"))
                .spawn(move || work(&queue, &hub))?;
        }
        let (admissions, admitting) = std::sync::mpsc::channel::<(Admission, RoundJob)>();
        std::thread::Builder::new()
            .name("tandem-worker-admit".into())
            .spawn(move || admit(&admitting, &hub))?;
        Ok(Self {
            tasks,
            admissions,
            idle: size as i64,
        })
    }

    /// Whether a worker is free for another step.
    pub(crate) fn has_idle(&self) -> bool {
        self.idle > 0
    }

    /// Hands `job`, the steps of `nodes`, to a free worker.
    pub(crate) fn run(&mut self, nodes: Vec<NodeName>, job: BatchJob) {
        self.send(Task::Steps { nodes, job });
    }

    /// Hands round `round`'s commit to a worker (the next free one); it reports
    /// [`HubInput::RoundDone`].
    pub(crate) fn run_round(&mut self, round: u64, job: RoundJob) {
        self.send(Task::Round { round, job });
    }

    /// Hands the slow part of `admission` to the admission thread, after those before
    /// it; it reports [`HubInput::AdmitBuilt`].
    pub(crate) fn run_admission(&self, admission: Admission, job: RoundJob) {
        // The thread lives as long as the pool's sender; a send cannot fail before.
        let _ = self.admissions.send((admission, job));
    }

    fn send(&mut self, task: Task) {
        self.idle -= 1;
        // The workers live as long as the pool's sender; a send cannot fail before.
        let _ = self.tasks.send(task);
    }

    /// A worker finished a step.
    pub(crate) fn finished(&mut self) {
        self.idle += 1;
    }
}

/// One worker: runs tasks until the pool is dropped.
fn work(queue: &Mutex<Receiver<Task>>, hub: &Sender<HubInput>) {
    loop {
        // The lock is held only while waiting for the next task.
        let task = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let done = match task {
            Ok(Task::Steps { nodes, job }) => {
                let replies = isolated(Devices(&nodes), "training a step of", job);
                HubInput::StepDone {
                    results: outcomes(nodes, replies),
                }
            }
            Ok(Task::Round { round, job }) => HubInput::RoundDone {
                round,
                failed: isolated("federated learning", "committing a round of", job).err(),
            },
            Err(_) => return,
        };
        if hub.send(done).is_err() {
            return;
        }
    }
}

/// The admission thread: runs admissions' work until the pool is dropped.
fn admit(queue: &Receiver<(Admission, RoundJob)>, hub: &Sender<HubInput>) {
    while let Ok((admission, job)) = queue.recv() {
        // A panic leaves nothing built; the application's verdict then says so.
        let _ = isolated(&admission.hello.node, "admitting", job);
        if hub.send(HubInput::AdmitBuilt(admission)).is_err() {
            return;
        }
    }
}

/// Devices named in a log line, `a, b, c`: formatted only when logged.
pub(crate) struct Devices<'a>(pub(crate) &'a [NodeName]);

impl std::fmt::Display for Devices<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, node) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(node.as_str())?;
        }
        Ok(())
    }
}

/// Each of `nodes`' outcome of a job that returned `replies` (or panicked): a device the
/// job gave no reply fails, so every device in it hears back.
fn outcomes(
    nodes: Vec<NodeName>,
    replies: Result<Vec<(NodeName, StepReply)>, String>,
) -> JobResults {
    let mut replies = match replies {
        Ok(replies) => replies,
        Err(failure) => {
            return nodes
                .into_iter()
                .map(|node| (node, Err(failure.clone())))
                .collect();
        }
    };
    nodes
        .into_iter()
        .map(|node| {
            let reply = match replies.iter().position(|(n, _)| *n == node) {
                Some(at) => Ok(replies.swap_remove(at).1),
                None => Err("the cloud's application gave this device's step no reply".into()),
            };
            (node, reply)
        })
        .collect()
}

/// Which device runs next: devices with a step ready, in the order they became ready,
/// each at most once (a device's next step is queued only after its previous one ran).
#[derive(Default)]
pub(crate) struct Fairness {
    ready: VecDeque<NodeName>,
    queued: HashSet<NodeName>,
    running: HashSet<NodeName>,
}

impl Fairness {
    /// `node` may have a step ready: queue it unless it is queued or running.
    pub(crate) fn ready(&mut self, node: &NodeName) {
        if !self.running.contains(node) && self.queued.insert(node.clone()) {
            self.ready.push_back(node.clone());
        }
    }

    /// The next device to run, left first in line.
    pub(crate) fn peek(&self) -> Option<NodeName> {
        self.ready.front().cloned()
    }

    /// The next device to run, now marked running.
    pub(crate) fn next(&mut self) -> Option<NodeName> {
        let node = self.ready.pop_front()?;
        self.queued.remove(&node);
        self.running.insert(node.clone());
        Some(node)
    }

    /// `node`'s step ended (or it had none to run after all).
    pub(crate) fn done(&mut self, node: &NodeName) {
        self.running.remove(node);
    }

    /// Whether `node` has a step running.
    pub(crate) fn is_running(&self, node: &NodeName) -> bool {
        self.running.contains(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeName {
        NodeName::try_from(name).unwrap()
    }

    #[test]
    fn devices_take_turns_and_never_run_twice_at_once() {
        let mut fair = Fairness::default();
        let (a, b) = (node("a"), node("b"));
        fair.ready(&a);
        fair.ready(&a);
        fair.ready(&b);
        assert_eq!(fair.next(), Some(a.clone()));
        // `a` is running: more of its steps wait until it is done.
        fair.ready(&a);
        assert_eq!(fair.next(), Some(b.clone()));
        assert_eq!(fair.next(), None);
        fair.done(&a);
        fair.ready(&a);
        fair.ready(&b);
        assert_eq!(fair.next(), Some(a.clone()));
        assert!(fair.is_running(&a));
        fair.done(&b);
        fair.ready(&b);
        assert_eq!(fair.next(), Some(b));
    }
}
