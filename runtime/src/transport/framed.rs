//! Reading and writing whole frames on quinn streams.

use super::TransportError;
use crate::wire::{FrameHeader, HEADER_LEN, Message, decode_payload, encode_frame};

/// Writes `msg` as one frame.
pub async fn write_frame<M: Message>(
    send: &mut quinn::SendStream,
    msg: &M,
) -> Result<(), TransportError> {
    let frame = encode_frame(msg)?;
    send.write_all(&frame).await.map_err(|err| match err {
        quinn::WriteError::ConnectionLost(lost) => TransportError::from_connection(lost),
        other => TransportError::Write(other),
    })
}

/// Reads one frame of type `M`. The header is validated (including the size cap of its
/// kind) before the payload buffer is allocated.
pub async fn read_frame<M: Message>(recv: &mut quinn::RecvStream) -> Result<M, TransportError> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await.map_err(read_error)?;
    let header = FrameHeader::parse(&header)?;
    let mut payload = vec![0u8; header.payload_len()];
    recv.read_exact(&mut payload).await.map_err(read_error)?;
    Ok(decode_payload(&header, &payload)?)
}

/// Surfaces the peer's close code when the connection, not just the stream, went away.
fn read_error(err: quinn::ReadExactError) -> TransportError {
    match err {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(lost)) => {
            TransportError::from_connection(lost)
        }
        other => TransportError::Read(other),
    }
}
