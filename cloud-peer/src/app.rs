//! What the cloud computes: the application the session hub calls.

use tandem_runtime::session::fl::Assignment;
use tandem_runtime::session::step_limits::StepLimits;
use tandem_runtime::wire::{
    Activations, Capabilities, CloseCode, CutGradient, Hello, NodeName, Update,
};

/// How a federated round ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RoundOutcome {
    /// Enough updates arrived: aggregate them (one per node, in node order).
    Committed {
        /// The round.
        round: u64,
        /// (node, update, encoded tensor).
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
}

impl RoundOutcome {
    /// The round that ended.
    pub fn round(&self) -> u64 {
        match self {
            Self::Committed { round, .. } | Self::Aborted { round, .. } => *round,
        }
    }
}

/// What an application agreed to serve a device it admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The largest split step the device may send: every `Activations` is checked
    /// against it from its header, before its tensor is read (`None`: the application
    /// takes split tensors as opaque bytes of up to the wire's cap).
    pub steps: Option<StepLimits>,
    /// The most tensor bytes one of the device's updates may carry (the model's size
    /// under the run's codec): a larger one is refused from its message, before its
    /// tensor is read (`None`: up to the connection's budget).
    pub update_bytes: Option<u64>,
}

/// A split step's reply: the cut gradient and its tensor, or one line for the device's
/// operator.
pub type StepReply = Result<(CutGradient, Vec<u8>), String>;

/// Why an application refused a device's Hello: one line for the device's operator, and
/// the close code that tells the device what it can do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// What the Hello asks cannot be served (closed with `Unserved`).
    #[error("{0}")]
    Unserved(String),
    /// Nothing of the device's run is held at the step its Hello names (the cloud
    /// restarted past its last snapshot, or freed the device's state): the device goes
    /// back to its checkpoint and says Hello again from there (closed with
    /// `ResumeRefused`).
    #[error("{0}")]
    ResumeRefused(String),
}

impl Refused {
    /// The close code the connection is closed with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Unserved(_) => CloseCode::Unserved,
            Self::ResumeRefused(_) => CloseCode::ResumeRefused,
        }
    }
}

impl From<String> for Refused {
    fn from(reason: String) -> Self {
        Self::Unserved(reason)
    }
}

impl From<&str> for Refused {
    fn from(reason: &str) -> Self {
        Self::Unserved(reason.to_string())
    }
}

/// How a device's admission goes on ([`CloudApp::admit_job`]).
pub enum AdmitJob {
    /// Decided on the hub: admitted within these limits, or refused with one line for
    /// the device's operator.
    Decided(Result<Admitted, Refused>),
    /// Slow work first (building a model, reading a snapshot), on a worker thread; the
    /// application keeps what it makes, and the hub then calls
    /// [`CloudApp::admit_built`] with the same Hello for the verdict.
    Build(Box<dyn FnOnce() + Send>),
}

/// A round's commit as work for a worker thread ([`CloudApp::round_job`]).
pub type RoundJob = Box<dyn FnOnce() + Send>;

/// One device's split step as work for a worker thread: trains and returns the cut
/// gradient (or one line for the device's operator).
pub type SplitJob = Box<dyn FnOnce() -> StepReply + Send>;

/// Several devices' split steps as one job for a worker thread: each device's reply.
pub type BatchJob = Box<dyn FnOnce() -> Vec<(NodeName, StepReply)> + Send>;

/// A device's split step, ready to run.
pub struct ReadyStep {
    /// The device.
    pub node: NodeName,
    /// Its message.
    pub activations: Box<Activations>,
    /// Its cut tensor.
    pub tensor: Vec<u8>,
}

impl ReadyStep {
    /// The padded tokens of its batch (`batch x seq`).
    pub fn padded_tokens(&self) -> u64 {
        u64::from(self.activations.batch) * u64::from(self.activations.seq)
    }
}

/// When rounds start and commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundQuorum {
    /// A round starts once this many joined devices are connected; the app's
    /// `participants` picks the round's devices among them.
    pub participants: usize,
    /// It commits with at least this many updates by its deadline.
    pub min_updates: usize,
}

/// The cloud's computation. The hub calls it from one dedicated thread, one call at a
/// time; split steps run as [`SplitJob`]s on worker threads, so an application that
/// makes its steps jobs ([`CloudApp::split_job`]) never holds up admissions, rounds or
/// other devices with a training step.
pub trait CloudApp: Send + 'static {
    /// The jobs served; devices asking for others learn it in HelloAck, and their
    /// messages for jobs not served are refused.
    fn capabilities(&self) -> Capabilities;

    /// Decides, before HelloAck, whether this device's request (its model, cut and
    /// codecs) can be served, and within which limits. `Err` is one line for the
    /// device's operator; the connection is then closed with its code and that line.
    /// Called again on every reconnect. The default admits everyone, with no step limits.
    fn admit(&mut self, hello: &Hello) -> Result<Admitted, Refused> {
        let _ = hello;
        Ok(Admitted::default())
    }

    /// [`CloudApp::admit`] as the hub runs it: decided here, or slow work for a worker
    /// thread first ([`AdmitJob::Build`]), so a device reconnecting in a loop with a
    /// new top to build never holds up the others. Called on the hub. The default
    /// decides here, with [`CloudApp::admit`].
    fn admit_job(&mut self, hello: &Hello) -> AdmitJob {
        AdmitJob::Decided(self.admit(hello))
    }

    /// The verdict on `hello` once its [`AdmitJob::Build`] ran (called on the hub; the
    /// work may have failed, leaving nothing built). The default decides again with
    /// [`CloudApp::admit`].
    fn admit_built(&mut self, hello: &Hello) -> Result<Admitted, Refused> {
        self.admit(hello)
    }

    /// Trains the top on one split step of `node` and returns the cut gradient (its
    /// `step` must be `activations.step`). Called exactly once per step: resends are
    /// answered from a cache. `Err` is one line for the device's operator; the device's
    /// connection is then closed with `Unserved`. The default serves no split sessions
    /// (the hub only calls it when the app's capabilities include `SPLIT`).
    fn split_step(
        &mut self,
        node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        let _ = (node, activations, tensor);
        Err("this cloud serves no split sessions".into())
    }

    /// Drops whatever the application holds for `node` (its top, its caches): the hub
    /// calls it when the application failed on `node`'s work, so a device that comes
    /// back starts from a clean state. The default holds nothing per device.
    fn forget(&mut self, node: &NodeName) {
        let _ = node;
    }

    /// `node`'s step as work for a worker thread; called on the hub, once per step, and
    /// never again for `node` before that job has run. The default computes
    /// [`CloudApp::split_step`] here, on the hub, and hands the worker its result: fine for
    /// an application whose steps are quick, not for one that trains.
    fn split_job(
        &mut self,
        node: &NodeName,
        activations: Box<Activations>,
        tensor: Vec<u8>,
    ) -> SplitJob {
        let reply = self.split_step(node, &activations, &tensor);
        Box::new(move || reply)
    }

    /// How large a batch of several devices' steps one job may take, in padded tokens:
    /// the hub hands [`CloudApp::split_batch`] the ready steps (each device's at most
    /// once) while their sequences, padded to the longest, stay within this (always at
    /// least one step). The default, 0, makes every step its own job.
    fn batch_tokens(&self) -> u64 {
        0
    }

    /// Ready steps of several devices as one job for a worker (called on the hub); its
    /// replies name each device once. The default makes each a [`CloudApp::split_job`]
    /// and runs them in turn; an application whose devices train one model overrides it
    /// to train them as one batch. A panic in the job fails every device in it.
    fn split_batch(&mut self, steps: Vec<ReadyStep>) -> BatchJob {
        jobs_in_turn(self, steps)
    }

    /// `node` (its certificate's name) sent a Join declaring `examples`. `Err` is one line
    /// for the device's operator: the device is refused (its connection closed with
    /// `Unserved` and that line) and does not join. An application that weighs updates
    /// keeps the count it first declared and refuses another. The default accepts every
    /// Join and keeps nothing.
    fn join(&mut self, node: &NodeName, examples: u64) -> Result<(), String> {
        let _ = (node, examples);
        Ok(())
    }

    /// Round quorum.
    fn quorum(&self) -> RoundQuorum {
        RoundQuorum {
            participants: 1,
            min_updates: 1,
        }
    }

    /// The participants of the next round among `available` (joined and connected
    /// devices, in name order; at least `quorum().participants` of them). The default
    /// takes them all.
    fn participants(&mut self, available: &[NodeName]) -> Vec<NodeName> {
        available.to_vec()
    }

    /// The tasks of round `round` (numbered from 1) for `participants` (what
    /// [`CloudApp::participants`] chose), one per participant, all with the same round
    /// number and deadline; `None` when there are no more rounds.
    /// [`Assignment::same_for_all`] serves an app that sends everyone the same model.
    /// The default runs none: an application that serves no federated rounds.
    fn round_tasks(&mut self, round: u64, participants: &[NodeName]) -> Option<Vec<Assignment>> {
        let _ = (round, participants);
        None
    }

    /// A round ended. The default keeps nothing of it.
    fn round_ended(&mut self, outcome: RoundOutcome) {
        let _ = outcome;
    }

    /// The run's last line once its rounds are over (the last committed, or the run
    /// stopped): every joined device is then closed with `Normal` and this line after
    /// the last round's result, and a device that joins afterwards at once. Asked on the
    /// hub whenever no round's commit is under way. The default: never over.
    fn run_over(&self) -> Option<String> {
        None
    }

    /// A round ended: its commit as work for a worker thread. Called on the hub; the
    /// hub starts no round, and sends no device the round's result, until the job has
    /// run (a device told "committed" can rely on the cloud having it). The default
    /// commits here, on the hub ([`CloudApp::round_ended`]), and hands the worker
    /// nothing: fine for an application whose commit is quick, not for one that
    /// decodes, aggregates and evaluates a model.
    fn round_job(&mut self, outcome: RoundOutcome) -> RoundJob {
        self.round_ended(outcome);
        Box::new(|| {})
    }
}

/// `steps` as one job that runs each device's [`CloudApp::split_job`] in turn (what
/// [`CloudApp::split_batch`] does unless the application batches).
pub fn jobs_in_turn<A: CloudApp + ?Sized>(app: &mut A, steps: Vec<ReadyStep>) -> BatchJob {
    let jobs: Vec<(NodeName, SplitJob)> = steps
        .into_iter()
        .map(|step| {
            let job = app.split_job(&step.node, step.activations, step.tensor);
            (step.node, job)
        })
        .collect();
    Box::new(move || jobs.into_iter().map(|(node, job)| (node, job())).collect())
}

/// Serves the Hello exchange only: no jobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct HelloOnly;

impl CloudApp for HelloOnly {
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }
}
