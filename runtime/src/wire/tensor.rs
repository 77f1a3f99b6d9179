//! Tensor payloads: the bytes after a tensor-carrying message, sent as a run of
//! [`Kind::Chunk`] frames so no single frame is large, under a total cap per message
//! kind that is checked before the first chunk is accepted.

use super::WireError;
use super::frame::FrameHeader;
use super::message::{Kind, Message};

/// Largest chunk frame payload: 4 MiB.
pub const CHUNK_MAX: usize = 4 << 20;

/// A message whose tensor bytes follow it in chunk frames.
pub trait TensorMessage: Message {
    /// The most tensor bytes a message of this kind may announce.
    const MAX_TENSOR: u64;

    /// The tensor bytes this message announces.
    fn payload_len(&self) -> u64;

    /// Errors if the announced length exceeds [`TensorMessage::MAX_TENSOR`].
    fn check_payload_len(&self) -> Result<(), WireError> {
        let len = self.payload_len();
        if len > Self::MAX_TENSOR {
            return Err(WireError::TensorTooLarge {
                kind: Self::KIND,
                len,
                cap: Self::MAX_TENSOR,
            });
        }
        Ok(())
    }
}

/// The chunk-frame headers for a payload of `len` bytes: `len.div_ceil(CHUNK_MAX)`
/// frames, all full but the last. Pair each with the matching slice of the payload.
pub fn chunk_headers(len: usize) -> impl Iterator<Item = FrameHeader> {
    (0..len.div_ceil(CHUNK_MAX)).map(move |i| {
        let this = CHUNK_MAX.min(len - i * CHUNK_MAX);
        // `this` <= CHUNK_MAX, the Chunk cap, so `new` cannot fail.
        FrameHeader::new(Kind::Chunk, this).unwrap_or_else(|_| unreachable!("chunk within cap"))
    })
}

/// Collects the chunks of one tensor payload (sans-I/O: the transport feeds it frames).
#[derive(Debug)]
pub struct TensorAssembler {
    expected: u64,
    bytes: Vec<u8>,
    /// Bytes of the current chunk still to come.
    chunk_left: usize,
}

impl TensorAssembler {
    /// Starts collecting the payload `msg` announces; refuses an announced length over
    /// its kind's cap before any chunk arrives. The buffer is sized once, from the
    /// announced (capped) length, so chunks are read in place and never copied on
    /// growth; that reserves address space, not memory: a page is touched only when a
    /// chunk's bytes land on it.
    pub fn new<M: TensorMessage>(msg: &M) -> Result<Self, WireError> {
        msg.check_payload_len()?;
        let expected = msg.payload_len();
        Ok(Self {
            expected,
            // Within the kind's cap (checked above), so it fits in usize.
            bytes: Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
            chunk_left: 0,
        })
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.expected - self.bytes.len() as u64
    }

    /// Whether every announced byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.remaining() == 0
    }

    /// Validates the next chunk's header and returns its length: that many bytes follow,
    /// through [`TensorAssembler::push`] in pieces as they arrive. Errors on a frame that
    /// is not a chunk, on an empty one, on one that would overrun the announced length,
    /// or while the current chunk is still short.
    pub fn begin_chunk(&mut self, header: &FrameHeader) -> Result<usize, WireError> {
        if header.kind() != Kind::Chunk {
            return Err(WireError::UnexpectedKind {
                expected: Kind::Chunk,
                found: header.kind(),
            });
        }
        if self.chunk_left > 0 {
            return Err(WireError::Truncated {
                needed: self.chunk_left,
                have: 0,
            });
        }
        let len = header.payload_len();
        // An empty chunk makes no progress: refuse it, or a peer could send them forever.
        if len == 0 || len as u64 > self.remaining() {
            return Err(WireError::ChunkOverrun {
                remaining: self.remaining(),
                got: len,
            });
        }
        self.chunk_left = len;
        Ok(len)
    }

    /// Appends `bytes` of the current chunk (read straight into the buffer sized once,
    /// never zeroed first); more than the chunk has left is an overrun.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if bytes.len() > self.chunk_left {
            return Err(WireError::ChunkOverrun {
                remaining: self.chunk_left as u64,
                got: bytes.len(),
            });
        }
        self.bytes.extend_from_slice(bytes);
        self.chunk_left -= bytes.len();
        Ok(())
    }

    /// Takes one whole chunk frame (header and bytes); see [`TensorAssembler::begin_chunk`].
    pub fn handle_chunk(&mut self, header: &FrameHeader, chunk: &[u8]) -> Result<(), WireError> {
        if chunk.len() != header.payload_len() {
            return Err(WireError::Truncated {
                needed: header.payload_len(),
                have: chunk.len(),
            });
        }
        self.begin_chunk(header)?;
        self.push(chunk)
    }

    /// The whole payload, once [`TensorAssembler::is_complete`].
    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        if !self.is_complete() {
            return Err(WireError::Truncated {
                needed: self.expected as usize,
                have: self.bytes.len(),
            });
        }
        Ok(self.bytes)
    }
}

/// Bytes `msg` and its `tensor_len` tensor bytes occupy on the wire: the message frame
/// and every chunk frame, headers included (QUIC and TLS overhead excluded).
pub fn wire_bytes<M: TensorMessage>(msg: &M, tensor_len: usize) -> Result<usize, WireError> {
    let frame = super::frame::encode_frame(msg)?.len();
    let chunks = tensor_len.div_ceil(CHUNK_MAX);
    Ok(frame + tensor_len + chunks * super::frame::HEADER_LEN)
}
