//! The device's connection to the cloud, driving the sans-I/O session machines over quinn
//! and reconnecting with backoff when the connection is lost.
//!
//! Guarantees:
//! - Every message is its own stream ([`send_envelope`]); what arrives is handed to the
//!   machine, which decides what is new, a duplicate or stale.
//! - A lost connection (network drop, idle timeout, the cloud restarting) is re-opened
//!   with exponential backoff, then the machine resends what is unanswered
//!   (`handle_reconnect`): a split step or an FL update is resumed, never counted twice.
//! - A refusal that retrying cannot fix (not on the allowlist, no common version, a
//!   certificate problem) ends the link at once with that error.

use super::{
    Inbound, OpenSession, Received, TransportError, open_session, receive_envelope, send_envelope,
};
use crate::session::Envelope;
use crate::session::fl::{ClientEvent, RoundClient};
use crate::session::split::{DeviceEvent, SplitDevice};
use crate::wire::{
    Activations, Capabilities, CloseCode, CutGradient, Hello, HelloAck, NodeName, RoundResult,
    RoundTask, Update, software_name,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How a device waits between reconnection attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// Wait before the second attempt (the first is immediate).
    pub first_wait: Duration,
    /// Each further wait is this many times longer...
    pub backoff: f64,
    /// ...up to this.
    pub max_wait: Duration,
    /// Give up when the cloud has been unreachable this long.
    pub give_up_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            first_wait: Duration::from_millis(200),
            backoff: 2.0,
            max_wait: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
        }
    }
}

/// Why the link stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The cloud refused us in a way retrying cannot fix, or the first connection failed.
    #[error(transparent)]
    Refused(#[from] TransportError),
    /// The cloud stayed unreachable for the policy's `give_up_after`.
    #[error("cloud unreachable after {attempts} reconnection attempts over {waited:?}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// Time spent trying.
        waited: Duration,
        /// The last attempt's error.
        #[source]
        last: TransportError,
    },
    /// The cloud never answered step `step` (every resend timed out).
    #[error("split step {step} got no answer after {attempts} attempts")]
    StepFailed {
        /// The step.
        step: u64,
        /// Times it was sent.
        attempts: u32,
    },
    /// The session machine refused the call (e.g. a step already in flight).
    #[error("{0}")]
    Session(String),
}

/// Where to connect and as whom.
#[derive(Clone, Debug)]
pub struct LinkTarget {
    /// The cloud's address.
    pub peer: SocketAddr,
    /// The name its certificate is issued for.
    pub server_name: String,
    /// The Hello sent on every (re)connection: this device (its node must match its
    /// certificate), the jobs it wants, its model and codecs.
    pub hello: Hello,
}

impl LinkTarget {
    /// A target for `node` asking for `capabilities`, with no model or codec description.
    pub fn new(
        peer: SocketAddr,
        server_name: &str,
        node: NodeName,
        capabilities: Capabilities,
    ) -> Self {
        let hello = Hello {
            capabilities,
            ..Hello::probe(node, software_name("tandem"))
        };
        Self {
            peer,
            server_name: server_name.to_string(),
            hello,
        }
    }
}

struct Live {
    connection: quinn::Connection,
    incoming: mpsc::Receiver<Envelope>,
}

/// Counters, for progress lines and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections re-opened after a loss.
    pub reconnects: u64,
}

/// The device end of a session with the cloud.
pub struct DeviceLink {
    endpoint: quinn::Endpoint,
    target: LinkTarget,
    policy: ReconnectPolicy,
    live: Option<Live>,
    ack: HelloAck,
    /// Sent again after every reconnect, so the cloud knows the device is still there.
    joined: Option<crate::wire::Join>,
    stats: LinkStats,
}

impl DeviceLink {
    /// Connects and completes the Hello exchange. A failure of this first connection is
    /// returned at once (a wrong address or certificate should not be retried for
    /// minutes).
    pub async fn connect(
        endpoint: quinn::Endpoint,
        target: LinkTarget,
        policy: ReconnectPolicy,
    ) -> Result<Self, LinkError> {
        let (ack, live) = open(&endpoint, &target).await?;
        Ok(Self {
            endpoint,
            target,
            policy,
            live: Some(live),
            ack,
            joined: None,
            stats: LinkStats::default(),
        })
    }

    /// The cloud's HelloAck of the current connection.
    pub fn ack(&self) -> &HelloAck {
        &self.ack
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The current connection, if up (tests use it to cut the link).
    pub fn connection(&self) -> Option<&quinn::Connection> {
        self.live.as_ref().map(|l| &l.connection)
    }

    /// Notes that the device has trained `steps` steps of its split run: a Hello on a
    /// later reconnect says so (`RunPlan::start_step`), so a cloud restarted meanwhile
    /// gives it the top after exactly that many steps, or refuses, rather than the top
    /// of where the process started.
    pub fn trained(&mut self, steps: u64) {
        self.target.hello.plan.start_step = steps;
    }

    /// Runs one split step: sends `activations` and `tensor` through `machine`, resends
    /// on timeouts and reconnects, and returns the step's gradient.
    pub async fn split_step(
        &mut self,
        machine: &mut SplitDevice,
        activations: Activations,
        tensor: Vec<u8>,
    ) -> Result<(CutGradient, Vec<u8>), LinkError> {
        machine
            .send_step(Instant::now(), activations, tensor)
            .map_err(|err| LinkError::Session(err.to_string()))?;
        self.drive(machine, |m| match m.poll_event() {
            Some(DeviceEvent::Gradient { gradient, tensor }) => Some(Ok((gradient, tensor))),
            Some(DeviceEvent::StepFailed { step, attempts }) => {
                Some(Err(LinkError::StepFailed { step, attempts }))
            }
            _ => None,
        })
        .await?
    }

    /// Says Hello again as process `process` of the same run, at `start_step` (a device
    /// that went back to its checkpoint after [`TransportError::ResumeRefused`]).
    pub async fn resume_at(&mut self, process: u64, start_step: u64) -> Result<(), LinkError> {
        if let Some(live) = self.live.take() {
            CloseCode::Normal.close(&live.connection);
        }
        let plan = &mut self.target.hello.plan;
        (plan.process, plan.start_step) = (process, start_step);
        self.reconnect().await
    }

    /// Offers this device for federated rounds (again after every reconnect).
    pub async fn join(&mut self, join: crate::wire::Join) -> Result<(), LinkError> {
        self.joined = Some(join.clone());
        self.send(&Envelope::Join(join)).await
    }

    /// Takes part in one federated round: waits for its task, trains with `train`, sends
    /// the update (resending until the result or the deadline) and returns the result,
    /// or `None` if the round's deadline passed without one. A `train` that returns
    /// `None` (it could not train, or refused to send what it trained) sends nothing: the
    /// round goes on without this device.
    pub async fn run_round(
        &mut self,
        machine: &mut RoundClient,
        mut train: impl FnMut(&RoundTask, &[u8]) -> Option<(Update, Vec<u8>)>,
    ) -> Result<Option<RoundResult>, LinkError> {
        self.drive(machine, |m| {
            let event = m.poll_event()?;
            Some(match event {
                ClientEvent::Train { task, model } => {
                    if let Some((update, tensor)) = train(&task, &model) {
                        m.submit_update(Instant::now(), update, tensor);
                    }
                    return None;
                }
                ClientEvent::Ended(result) => Some(result),
                ClientEvent::Expired { .. } => None,
            })
        })
        .await
    }

    /// Closes the connection cleanly.
    pub fn close(&mut self) {
        if let Some(live) = self.live.take() {
            CloseCode::Normal.close(&live.connection);
        }
    }

    /// Feeds `machine` until `done` returns a value: transmits, waits for messages or its
    /// next timer, reconnects when the connection is lost.
    async fn drive<M: Machine, R>(
        &mut self,
        machine: &mut M,
        mut done: impl FnMut(&mut M) -> Option<R>,
    ) -> Result<R, LinkError> {
        loop {
            // Events first: handling one (training on a task) may queue a transmit.
            if let Some(result) = done(machine) {
                return Ok(result);
            }
            while let Some(envelope) = machine.poll_transmit() {
                self.send(&envelope).await?;
            }
            if self.live.is_none() {
                self.reconnect().await?;
                if let Some(join) = self.joined.clone() {
                    self.send(&Envelope::Join(join)).await?;
                }
                machine.handle_reconnect(Instant::now());
                continue;
            }
            let deadline = machine.poll_timeout();
            let live = self.live.as_mut().expect("checked above");
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let gone = tokio::select! {
                message = live.incoming.recv() => match message {
                    Some(envelope) => {
                        machine.handle_message(Instant::now(), envelope);
                        None
                    }
                    // The reader ended: the connection is gone.
                    None => Some(live.connection.close_reason()),
                },
                () = sleep => {
                    machine.handle_timeout(Instant::now());
                    None
                }
            };
            if let Some(reason) = gone {
                // A cloud that refused this device mid-session (`Unserved`) would refuse
                // it again: no reconnect.
                if let Some(err) = reason
                    .map(TransportError::from_connection)
                    .filter(is_permanent)
                {
                    self.live = None;
                    return Err(err.into());
                }
                self.lost("connection lost");
            }
        }
    }

    /// Sends one message; a failure marks the connection lost (the machine resends after
    /// the reconnect), except for errors retrying cannot fix.
    async fn send(&mut self, envelope: &Envelope) -> Result<(), LinkError> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        match send_envelope(&live.connection, envelope).await {
            Ok(()) => Ok(()),
            Err(err) if is_permanent(&err) => Err(err.into()),
            Err(err) => {
                self.lost(&format!("send failed: {err}"));
                Ok(())
            }
        }
    }

    fn lost(&mut self, why: &str) {
        if let Some(live) = self.live.take() {
            tracing::warn!(
                reason = %live.connection.close_reason().map_or(why.to_string(), |r| r.to_string()),
                "connection to the cloud lost; reconnecting"
            );
        }
    }

    async fn reconnect(&mut self) -> Result<(), LinkError> {
        let start = Instant::now();
        let mut wait = self.policy.first_wait;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match open(&self.endpoint, &self.target).await {
                Ok((ack, live)) => {
                    self.ack = ack;
                    self.live = Some(live);
                    self.stats.reconnects += 1;
                    tracing::info!(attempts, "reconnected");
                    return Ok(());
                }
                Err(err) if is_permanent(&err) => return Err(err.into()),
                Err(last) => {
                    let waited = start.elapsed();
                    if waited + wait > self.policy.give_up_after {
                        return Err(LinkError::Unreachable {
                            attempts,
                            waited,
                            last,
                        });
                    }
                    tracing::debug!(
                        attempts,
                        wait_ms = wait.as_millis() as u64,
                        "reconnect failed: {last}"
                    );
                    tokio::time::sleep(wait).await;
                    wait = wait
                        .mul_f64(self.policy.backoff.max(1.0))
                        .min(self.policy.max_wait);
                }
            }
        }
    }
}

/// Errors that a new connection would meet again.
fn is_permanent(err: &TransportError) -> bool {
    match err {
        TransportError::Closed(code) => {
            matches!(code, CloseCode::NotAllowed | CloseCode::UnsupportedVersion)
        }
        TransportError::Certificate { .. }
        | TransportError::Tls(_)
        | TransportError::Unserved(_)
        | TransportError::ResumeRefused(_)
        | TransportError::Finished(_)
        | TransportError::Connect(_) => true,
        TransportError::Connection(quinn::ConnectionError::TransportError(_)) => true,
        _ => false,
    }
}

/// Opens a connection to `target` with its Hello and starts reading it.
async fn open(
    endpoint: &quinn::Endpoint,
    target: &LinkTarget,
) -> Result<(HelloAck, Live), TransportError> {
    let session = open_session(endpoint, target.peer, &target.server_name, &target.hello).await?;
    let ack = session.ack.clone();
    Ok((ack, start_reader(session)))
}

/// Spawns the task that reads every incoming stream of `session` into a channel; the
/// channel closes when the connection does.
fn start_reader(session: OpenSession) -> Live {
    let (tx, incoming) = mpsc::channel(64);
    let connection = session.connection.clone();
    tokio::spawn(async move {
        while let Ok(recv) = connection.accept_uni().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                match receive_envelope(recv, &Inbound::device()).await {
                    Received::Message(envelope, _) => {
                        let _ = tx.send(envelope).await;
                    }
                    Received::Refused(err) => {
                        tracing::warn!("refused a stream from the cloud: {err}");
                    }
                    Received::ConnectionGone => {}
                }
            });
        }
    });
    Live {
        connection: session.connection,
        incoming,
    }
}

/// What [`DeviceLink`] needs from a session machine.
trait Machine {
    fn handle_message(&mut self, now: Instant, envelope: Envelope);
    fn handle_timeout(&mut self, now: Instant);
    fn handle_reconnect(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Envelope>;
    fn poll_timeout(&self) -> Option<Instant>;
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn handle_message(&mut self, now: Instant, envelope: Envelope) {
                <$t>::handle_message(self, now, envelope)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn handle_reconnect(&mut self, now: Instant) {
                <$t>::handle_reconnect(self, now)
            }
            fn poll_transmit(&mut self) -> Option<Envelope> {
                <$t>::poll_transmit(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self)
            }
        }
    };
}
machine!(SplitDevice);
machine!(RoundClient);
