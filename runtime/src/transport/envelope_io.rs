//! Session messages on QUIC streams: one [`Envelope`] per unidirectional stream.
//!
//! A stream per message keeps messages independent: a message over its cap is refused by
//! stopping that one stream ([`STREAM_REFUSED`]) while the connection and every other
//! stream keep working, and a resent message never queues behind a stuck one.

use super::TransportError;
use super::framed::{read_body, read_header, read_tensor, write_frame, write_tensor_message};
use super::limits::slow_link_time;
use crate::session::Envelope;
use crate::session::step_limits::StepLimits;
use crate::wire::{
    Activations, Capabilities, CutGradient, FrameHeader, Join, Kind, RoundResult, RoundTask,
    TensorMessage, Update,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The application error code a receiver stops a refused stream with.
pub const STREAM_REFUSED: u32 = 0x10;

/// Opens a unidirectional stream on `connection`, writes `envelope` and finishes it.
pub async fn send_envelope(
    connection: &quinn::Connection,
    envelope: &Envelope,
) -> Result<(), TransportError> {
    send_envelope_stream(connection, envelope).await.map(drop)
}

/// [`send_envelope`], returning the finished stream (its `stopped()` completes once the
/// peer has every byte of it).
pub async fn send_envelope_stream(
    connection: &quinn::Connection,
    envelope: &Envelope,
) -> Result<quinn::SendStream, TransportError> {
    let mut send = connection
        .open_uni()
        .await
        .map_err(TransportError::from_connection)?;
    match envelope {
        Envelope::Activations(msg, tensor) => {
            write_tensor_message(&mut send, msg.as_ref(), tensor).await?
        }
        Envelope::CutGradient(msg, tensor) => write_tensor_message(&mut send, msg, tensor).await?,
        Envelope::RoundTask(msg, tensor) => write_tensor_message(&mut send, msg, tensor).await?,
        Envelope::Update(msg, tensor) => write_tensor_message(&mut send, msg, tensor).await?,
        Envelope::Join(msg) => write_frame(&mut send, msg).await?,
        Envelope::RoundResult(msg) => write_frame(&mut send, msg).await?,
    }
    // Finishing only fails if the stream was already stopped or reset by the peer; the
    // bytes written so far are then lost either way and the session layer resends.
    let _ = send.finish();
    Ok(send)
}

/// What one end accepts on its session streams, checked from each message's header
/// before its body or tensor is read: the kinds it serves in the direction they travel
/// to it, the split steps agreed at Hello, and a budget of tensor bytes held at once.
#[derive(Clone, Debug)]
pub struct Inbound {
    kinds: &'static [Kind],
    steps: Option<StepLimits>,
    budget: Option<(Arc<Semaphore>, u64)>,
    /// The most tensor bytes of one update.
    update_bytes: Option<u64>,
    /// The time a stream has for its message (and, plus a second per
    /// [`MIN_STREAM_RATE`](super::MIN_STREAM_RATE) bytes, for its tensor once its budget is held).
    deadline: Option<Duration>,
}

impl Inbound {
    /// A device: what the cloud sends (cut gradients, round tasks and results).
    pub fn device() -> Self {
        Self {
            kinds: &[Kind::CutGradient, Kind::RoundTask, Kind::RoundResult],
            steps: None,
            budget: None,
            update_bytes: None,
            deadline: None,
        }
    }

    /// A cloud serving `granted` (the jobs of its HelloAck) to one device: split steps
    /// (within `steps` when given), federated joins and updates; at most `budget_bytes`
    /// (up to 4 GiB) of this device's tensors held at once (a stream waits, unread, for
    /// its tensor's bytes, so the device's QUIC flow control stalls it; a tensor larger
    /// than the whole budget is refused).
    pub fn cloud(granted: Capabilities, steps: Option<StepLimits>, budget_bytes: u64) -> Self {
        let (split, fl) = (
            granted.contains(Capabilities::SPLIT),
            granted.contains(Capabilities::FL),
        );
        let kinds: &'static [Kind] = match (split, fl) {
            (true, true) => &[Kind::Activations, Kind::Join, Kind::Update],
            (true, false) => &[Kind::Activations],
            (false, true) => &[Kind::Join, Kind::Update],
            (false, false) => &[],
        };
        let permits = budget_bytes
            .min(Semaphore::MAX_PERMITS as u64)
            .min(u64::from(u32::MAX));
        Self {
            kinds,
            steps,
            budget: Some((Arc::new(Semaphore::new(permits as usize)), permits)),
            update_bytes: None,
            deadline: None,
        }
    }

    /// Refuses an update whose tensor is over `bytes` from its message, unread.
    pub fn with_update_bytes(mut self, bytes: Option<u64>) -> Self {
        self.update_bytes = bytes;
        self
    }

    /// Refuses a stream that has not delivered its message within `deadline`, or its
    /// tensor within `deadline` plus a second per [`MIN_STREAM_RATE`](super::MIN_STREAM_RATE) bytes.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Runs `read` within the stream's deadline for `tensor_bytes` (no deadline: as is).
    async fn within<T>(
        &self,
        tensor_bytes: u64,
        read: impl std::future::Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let Some(base) = self.deadline else {
            return read.await;
        };
        let limit = slow_link_time(base, tensor_bytes);
        tokio::time::timeout(limit, read).await.map_err(|_| {
            TransportError::Protocol(format!(
                "the stream did not deliver {} within {} s",
                if tensor_bytes == 0 {
                    "its message".to_string()
                } else {
                    format!("its tensor of {tensor_bytes} bytes")
                },
                limit.as_secs_f64()
            ))
        })?
    }

    /// Whether a message of `kind` is read at all.
    pub fn accepts(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Holds `bytes` of the budget for a tensor about to be read (waiting while the
    /// budget is spent); refuses one larger than the whole budget.
    async fn hold(&self, bytes: u64) -> Result<InFlight, TransportError> {
        let Some((semaphore, total)) = &self.budget else {
            return Ok(InFlight(None));
        };
        if bytes > *total {
            return Err(TransportError::Protocol(format!(
                "a tensor of {bytes} bytes is over this connection's budget of {total}"
            )));
        }
        // `bytes <= total <= u32::MAX` here.
        let permit = semaphore
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .map_err(|_| TransportError::Protocol("the connection's budget is closed".into()))?;
        Ok(InFlight(Some(permit)))
    }
}

/// A message's share of its connection's byte budget ([`Inbound::cloud`]): hold it while
/// the message is being processed; dropping it lets the connection read on.
#[derive(Debug)]
pub struct InFlight(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// What became of one incoming session stream ([`receive_envelope`]).
#[derive(Debug)]
pub enum Received {
    /// A whole, valid message, with its share of the connection's budget.
    Message(Envelope, InFlight),
    /// A bad message (over a cap, malformed, out of place): the stream was stopped with
    /// [`STREAM_REFUSED`]; the connection and every other stream stay up.
    Refused(TransportError),
    /// The connection went away mid-stream: nothing to refuse, the sender resends after
    /// it reconnects.
    ConnectionGone,
}

/// Reads the one message of an accepted session stream and, if it is bad, refuses
/// the stream. Both ends read their incoming streams with this.
pub async fn receive_envelope(mut recv: quinn::RecvStream, inbound: &Inbound) -> Received {
    match read_envelope(&mut recv, inbound).await {
        Ok((envelope, held)) => Received::Message(envelope, held),
        Err(TransportError::Closed(_) | TransportError::Connection(_)) => Received::ConnectionGone,
        Err(err) => {
            let _ = recv.stop(STREAM_REFUSED.into());
            Received::Refused(err)
        }
    }
}

/// Reads the one message of a session stream. Every cap is checked before the bytes it
/// guards are read: a kind `inbound` does not accept (one it does not serve, one that
/// travels the other way, Hello after the handshake, a bare Chunk) is refused from its
/// header, a split step past the agreed shape from its message, before its tensor.
pub async fn read_envelope(
    recv: &mut quinn::RecvStream,
    inbound: &Inbound,
) -> Result<(Envelope, InFlight), TransportError> {
    let header = inbound.within(0, read_header(recv)).await?;
    let kind = header.kind();
    if !inbound.accepts(kind) {
        return Err(TransportError::Protocol(format!(
            "a {kind:?} message is not served on this end of the session"
        )));
    }
    Ok(match kind {
        Kind::Activations => {
            let msg: Activations = inbound.within(0, read_body(recv, &header)).await?;
            if let Some(limits) = &inbound.steps {
                limits
                    .check(&msg)
                    .map_err(|e| TransportError::Protocol(e.to_string()))?;
            }
            msg.check_payload_len()?;
            let held = inbound.hold(msg.payload_len).await?;
            let tensor = inbound
                .within(msg.payload_len, read_tensor(recv, &msg))
                .await?;
            (Envelope::Activations(Box::new(msg), tensor), held)
        }
        Kind::CutGradient => {
            let (msg, tensor, held) = read_held::<CutGradient>(recv, &header, inbound).await?;
            (Envelope::CutGradient(msg, tensor), held)
        }
        Kind::RoundTask => {
            let (msg, tensor, held) = read_held::<RoundTask>(recv, &header, inbound).await?;
            (Envelope::RoundTask(msg, tensor), held)
        }
        Kind::Update => {
            let (msg, tensor, held) = read_held::<Update>(recv, &header, inbound).await?;
            (Envelope::Update(msg, tensor), held)
        }
        Kind::Join => (
            Envelope::Join(inbound.within(0, read_body::<Join>(recv, &header)).await?),
            InFlight(None),
        ),
        Kind::RoundResult => (
            Envelope::RoundResult(
                inbound
                    .within(0, read_body::<RoundResult>(recv, &header))
                    .await?,
            ),
            InFlight(None),
        ),
        other => {
            return Err(TransportError::Protocol(format!(
                "a {other:?} frame has no place in a session stream"
            )));
        }
    })
}

/// Reads a tensor message's body, holds its tensor's bytes of the budget, then reads
/// the tensor. An update over the inbound's bound is refused before its tensor.
async fn read_held<M: TensorMessage>(
    recv: &mut quinn::RecvStream,
    header: &FrameHeader,
    inbound: &Inbound,
) -> Result<(M, Vec<u8>, InFlight), TransportError> {
    let msg: M = inbound.within(0, read_body(recv, header)).await?;
    msg.check_payload_len()?;
    if let (Kind::Update, Some(bound)) = (header.kind(), inbound.update_bytes)
        && msg.payload_len() > bound
    {
        return Err(TransportError::Protocol(format!(
            "an update of {} bytes is over this run's bound of {bound} (the model under its codec)",
            msg.payload_len()
        )));
    }
    let held = inbound.hold(msg.payload_len()).await?;
    let tensor = inbound
        .within(msg.payload_len(), read_tensor(recv, &msg))
        .await?;
    Ok((msg, tensor, held))
}
