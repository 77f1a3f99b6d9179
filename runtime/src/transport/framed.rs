//! Reading and writing whole frames on quinn streams.

use super::TransportError;
use crate::wire::{
    FrameHeader, HEADER_LEN, Message, TensorAssembler, TensorMessage, chunk_headers,
    decode_payload, encode_frame,
};

/// Writes `msg` as one frame.
pub async fn write_frame<M: Message>(
    send: &mut quinn::SendStream,
    msg: &M,
) -> Result<(), TransportError> {
    let frame = encode_frame(msg)?;
    write_all(send, &frame).await
}

async fn write_all(send: &mut quinn::SendStream, bytes: &[u8]) -> Result<(), TransportError> {
    send.write_all(bytes).await.map_err(|err| match err {
        quinn::WriteError::ConnectionLost(lost) => TransportError::from_connection(lost),
        other => TransportError::Write(other),
    })
}

/// Writes a tensor-carrying message and its `tensor` bytes as chunk frames (each at most
/// [`crate::wire::CHUNK_MAX`]). `msg.payload_len()` must equal `tensor.len()`.
pub async fn write_tensor_message<M: TensorMessage>(
    send: &mut quinn::SendStream,
    msg: &M,
    tensor: &[u8],
) -> Result<(), TransportError> {
    if msg.payload_len() != tensor.len() as u64 {
        return Err(TransportError::Protocol(format!(
            "{:?} announces {} tensor bytes but {} were given",
            M::KIND,
            msg.payload_len(),
            tensor.len()
        )));
    }
    msg.check_payload_len()?;
    write_frame(send, msg).await?;
    let mut at = 0;
    for header in chunk_headers(tensor.len()) {
        let len = header.payload_len();
        write_all(send, &header.to_bytes()).await?;
        write_all(send, &tensor[at..at + len]).await?;
        at += len;
    }
    Ok(())
}

/// Reads a tensor-carrying message and its chunks. The announced length is checked
/// against the kind's cap before any chunk is read; memory grows with the chunks.
pub async fn read_tensor_message<M: TensorMessage>(
    recv: &mut quinn::RecvStream,
) -> Result<(M, Vec<u8>), TransportError> {
    let header = read_header(recv).await?;
    read_tensor_body(recv, &header).await
}

/// Reads one frame of type `M`. The header is validated (including the size cap of its
/// kind) before the payload buffer is allocated.
pub async fn read_frame<M: Message>(recv: &mut quinn::RecvStream) -> Result<M, TransportError> {
    let header = read_header(recv).await?;
    read_body(recv, &header).await
}

/// Reads and validates one frame header.
pub(super) async fn read_header(
    recv: &mut quinn::RecvStream,
) -> Result<FrameHeader, TransportError> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await.map_err(read_error)?;
    Ok(FrameHeader::parse(&header)?)
}

/// Reads the payload announced by `header` and decodes it as `M` (whose kind must match).
pub(super) async fn read_body<M: Message>(
    recv: &mut quinn::RecvStream,
    header: &FrameHeader,
) -> Result<M, TransportError> {
    let mut payload = vec![0u8; header.payload_len()];
    recv.read_exact(&mut payload).await.map_err(read_error)?;
    Ok(decode_payload(header, &payload)?)
}

/// Reads the payload announced by `header` as `M`, then its tensor chunks.
pub(super) async fn read_tensor_body<M: TensorMessage>(
    recv: &mut quinn::RecvStream,
    header: &FrameHeader,
) -> Result<(M, Vec<u8>), TransportError> {
    let msg: M = read_body(recv, header).await?;
    let tensor = read_tensor(recv, &msg).await?;
    Ok((msg, tensor))
}

/// Reads the tensor chunks that follow `msg`.
pub(super) async fn read_tensor<M: TensorMessage>(
    recv: &mut quinn::RecvStream,
    msg: &M,
) -> Result<Vec<u8>, TransportError> {
    let mut assembler = TensorAssembler::new(msg)?;
    while !assembler.is_complete() {
        let header = read_header(recv).await?;
        let len = assembler.begin_chunk(&header)?;
        let mut left = len;
        // Each piece quinn holds goes straight into the payload's buffer: one copy.
        while left > 0 {
            let piece = recv
                .read_chunk(left, true)
                .await
                .map_err(|e| read_error(quinn::ReadExactError::ReadError(e)))?
                .ok_or_else(|| read_error(quinn::ReadExactError::FinishedEarly(len - left)))?;
            assembler.push(&piece.bytes)?;
            left -= piece.bytes.len();
        }
    }
    Ok(assembler.finish()?)
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
