//! Session messages on QUIC streams: one [`Envelope`] per unidirectional stream.
//!
//! A stream per message keeps messages independent: a message over its cap is refused by
//! stopping that one stream ([`STREAM_REFUSED`]) while the connection and every other
//! stream keep working, and a resent message never queues behind a stuck one.

use super::TransportError;
use super::framed::{read_body, read_header, read_tensor_body, write_frame, write_tensor_message};
use crate::session::Envelope;
use crate::wire::{Activations, CutGradient, Join, Kind, RoundResult, RoundTask, Update};

/// The application error code a receiver stops a refused stream with.
pub const STREAM_REFUSED: u32 = 0x10;

/// Opens a unidirectional stream on `connection`, writes `envelope` and finishes it.
pub async fn send_envelope(
    connection: &quinn::Connection,
    envelope: &Envelope,
) -> Result<(), TransportError> {
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
    Ok(())
}

/// What became of one incoming session stream ([`receive_envelope`]).
#[derive(Debug)]
pub enum Received {
    /// A whole, valid message.
    Message(Envelope),
    /// A bad message (over a cap, malformed, out of place): the stream was stopped with
    /// [`STREAM_REFUSED`]; the connection and every other stream stay up.
    Refused(TransportError),
    /// The connection went away mid-stream: nothing to refuse, the sender resends after
    /// it reconnects.
    ConnectionGone,
}

/// Reads the one message of an accepted session stream and, if it is bad, refuses
/// the stream. Both ends read their incoming streams with this.
pub async fn receive_envelope(mut recv: quinn::RecvStream) -> Received {
    match read_envelope(&mut recv).await {
        Ok(envelope) => Received::Message(envelope),
        Err(TransportError::Closed(_) | TransportError::Connection(_)) => Received::ConnectionGone,
        Err(err) => {
            let _ = recv.stop(STREAM_REFUSED.into());
            Received::Refused(err)
        }
    }
}

/// Reads the one message of a session stream. Every cap is checked before the bytes it
/// guards are read; a message kind that has no place in a session (Hello after the
/// handshake, a bare Chunk) is a protocol error.
pub async fn read_envelope(recv: &mut quinn::RecvStream) -> Result<Envelope, TransportError> {
    let header = read_header(recv).await?;
    Ok(match header.kind() {
        Kind::Activations => {
            let (msg, tensor) = read_tensor_body::<Activations>(recv, &header).await?;
            Envelope::Activations(Box::new(msg), tensor)
        }
        Kind::CutGradient => {
            let (msg, tensor) = read_tensor_body::<CutGradient>(recv, &header).await?;
            Envelope::CutGradient(msg, tensor)
        }
        Kind::RoundTask => {
            let (msg, tensor) = read_tensor_body::<RoundTask>(recv, &header).await?;
            Envelope::RoundTask(msg, tensor)
        }
        Kind::Update => {
            let (msg, tensor) = read_tensor_body::<Update>(recv, &header).await?;
            Envelope::Update(msg, tensor)
        }
        Kind::Join => Envelope::Join(read_body::<Join>(recv, &header).await?),
        Kind::RoundResult => Envelope::RoundResult(read_body::<RoundResult>(recv, &header).await?),
        other => {
            return Err(TransportError::Protocol(format!(
                "a {other:?} frame has no place in a session stream"
            )));
        }
    })
}
