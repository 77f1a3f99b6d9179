//! What the hub sends one device: a bounded queue drained by the connection's writer
//! task, each send with a deadline.
//!
//! The hub never waits on a device, and a device never makes the cloud hold more than a
//! bound for it (DESIGN.md's trust rules): a message that would take the queue past
//! [`OutboxLimits::messages`] or [`OutboxLimits::bytes`] closes the connection instead
//! of growing it, and so does a send the device does not take within its deadline
//! ([`OutboxLimits::deadline`]: it stopped reading, or granting streams). A cut
//! gradient already queued or being written is not queued again: a device resending its
//! step while the reply is on its way gets that one copy. Refusals close the connection
//! through its handle at once, never behind a stalled writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tandem_runtime::session::Envelope;
use tandem_runtime::transport;
use tandem_runtime::wire::CloseCode;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, warn};

/// How much one device's outbox may hold, and how long one send may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Messages queued at most.
    pub messages: usize,
    /// Tensor bytes queued at most (a single larger message is taken when the queue is
    /// empty: the largest reply must always fit).
    pub bytes: u64,
    /// A message not taken by the device within this, plus a second per
    /// [`MIN_STREAM_RATE`](transport::MIN_STREAM_RATE) bytes of its tensor, is the end of its connection.
    pub send_deadline: Duration,
}

impl OutboxLimits {
    /// How long a message with `tensor_bytes` may take to send.
    pub fn deadline(&self, tensor_bytes: usize) -> Duration {
        transport::slow_link_time(self.send_deadline, tensor_bytes as u64)
    }
}

impl Default for OutboxLimits {
    /// 64 messages, 64 MiB (two of the largest split replies, about 25 MB each), and a
    /// minute a message plus a second per 32 KiB (a 25 MB reply: about 14 minutes).
    fn default() -> Self {
        Self {
            messages: 64,
            bytes: 64 << 20,
            send_deadline: Duration::from_secs(60),
        }
    }
}

/// What is queued, shared by the hub's side and the writer.
#[derive(Debug, Default)]
struct Queued {
    bytes: AtomicU64,
    /// `step + 1` of the cut gradient queued or being written; 0 when none.
    gradient: AtomicU64,
}

/// What the writer takes from the queue.
#[derive(Debug)]
enum Item {
    /// A message to send.
    Message(Envelope),
    /// The end of the device's work: close the connection with `Normal` and this line.
    Finish(String),
}

/// The hub's handle on one connection's outbox.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: tokio::sync::mpsc::Sender<Item>,
    queued: Arc<Queued>,
    connection: quinn::Connection,
    limits: OutboxLimits,
}

impl Outbox {
    /// An outbox for `connection` and the writer task that drains it (spawned on the
    /// current runtime; it ends when the outbox is dropped or the connection closes).
    pub(crate) fn start(
        connection: quinn::Connection,
        limits: OutboxLimits,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, mut outgoing) = tokio::sync::mpsc::channel(limits.messages.max(1));
        let queued = Arc::new(Queued::default());
        let outbox = Self {
            queue,
            queued: queued.clone(),
            connection: connection.clone(),
            limits,
        };
        let writer = tokio::spawn(async move {
            // The stream last sent: the end waits until the device has all of it.
            let mut last: Option<quinn::SendStream> = None;
            while let Some(item) = outgoing.recv().await {
                let envelope = match item {
                    Item::Message(envelope) => envelope,
                    Item::Finish(reason) => {
                        if let Some(last) = last.take() {
                            let _ =
                                tokio::time::timeout(limits.send_deadline, last.stopped()).await;
                        }
                        CloseCode::Normal.close_because(&connection, &reason);
                        break;
                    }
                };
                let deadline = limits.deadline(envelope.tensor_len());
                let sent = tokio::time::timeout(
                    deadline,
                    transport::send_envelope_stream(&connection, &envelope),
                )
                .await;
                queued
                    .bytes
                    .fetch_sub(envelope.tensor_len() as u64, Ordering::AcqRel);
                if let Envelope::CutGradient(gradient, _) = &envelope {
                    let _ = queued.gradient.compare_exchange(
                        gradient.step.wrapping_add(1),
                        0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                match sent {
                    Ok(Ok(stream)) => last = Some(stream),
                    Ok(Err(err)) => {
                        // The connection is gone, or the device refused what it was sent:
                        // either way nothing more reaches it on this connection.
                        debug!("send failed: {err}");
                        let reason = format!("sending a {:?} message failed", envelope.kind());
                        CloseCode::Unserved.close_because(&connection, &reason);
                        break;
                    }
                    Err(_) => {
                        let reason = format!(
                            "a {:?} message of {} bytes was not taken within {} s",
                            envelope.kind(),
                            envelope.tensor_len(),
                            deadline.as_secs_f64()
                        );
                        warn!("closing the connection: {reason}");
                        CloseCode::Unserved.close_because(&connection, &reason);
                        break;
                    }
                }
            }
        });
        (outbox, writer)
    }

    /// Queues `envelope`; `false` when the outbox was full, and the connection is then
    /// closed (also `false` when it is already gone: it gets the message again when it
    /// resends or reconnects).
    pub(crate) fn send(&self, envelope: Envelope) -> bool {
        let bytes = envelope.tensor_len() as u64;
        if let Envelope::CutGradient(gradient, _) = &envelope {
            let step = gradient.step.wrapping_add(1);
            if self.queued.gradient.load(Ordering::Acquire) == step {
                // That reply is already on its way.
                return true;
            }
            self.queued.gradient.store(step, Ordering::Release);
        }
        let held = self.queued.bytes.load(Ordering::Acquire);
        if held > 0 && held.saturating_add(bytes) > self.limits.bytes {
            self.overflow(&format!(
                "its outbox holds {held} bytes and {bytes} more would pass its bound of {}",
                self.limits.bytes
            ));
            return false;
        }
        self.queued.bytes.fetch_add(bytes, Ordering::AcqRel);
        match self.queue.try_send(Item::Message(envelope)) {
            Ok(()) => true,
            Err(TrySendError::Full(envelope)) => {
                self.queued.bytes.fetch_sub(bytes, Ordering::AcqRel);
                drop(envelope);
                self.overflow(&format!(
                    "{} messages are waiting for it already",
                    self.limits.messages
                ));
                false
            }
            Err(TrySendError::Closed(_)) => {
                self.queued.bytes.fetch_sub(bytes, Ordering::AcqRel);
                false
            }
        }
    }

    /// Closes the connection with `Normal` and `reason` once what is queued has gone out:
    /// the device's work here is done (at once when the queue is full).
    pub(crate) fn finish(&self, reason: &str) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Item::Finish(reason.into())) {
            CloseCode::Normal.close_because(&self.connection, reason);
        }
    }

    /// Closes the connection now with `Unserved` and `reason`.
    pub(crate) fn refuse(&self, reason: &str) {
        CloseCode::Unserved.close_because(&self.connection, reason);
    }

    fn overflow(&self, why: &str) {
        let reason = format!("the device does not read what it is sent: {why}");
        warn!("closing the connection: {reason}");
        self.refuse(&reason);
    }
}
