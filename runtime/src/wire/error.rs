//! Wire decoding errors.

use super::Kind;

/// Why bytes could not be turned into a message (or a message into bytes).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The first 4 bytes are not `TNDM`: not a tandem peer.
    #[error("not a tandem frame (magic {found:02x?})")]
    BadMagic {
        /// The 4 bytes found instead.
        found: [u8; 4],
    },
    /// The frame's protocol version is outside what this build supports.
    #[error("protocol version {found} not supported (this build speaks {min}..={max})")]
    UnsupportedVersion {
        /// Version in the header.
        found: u16,
        /// Oldest supported version.
        min: u16,
        /// Newest supported version.
        max: u16,
    },
    /// Same version, different message layouts: the peers were built from different schemas.
    #[error("wire schema hash {found:#010x} differs from this build's {expected:#010x}")]
    SchemaMismatch {
        /// Hash in the header.
        found: u32,
        /// This build's hash.
        expected: u32,
    },
    /// The header names a message kind this build does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u16),
    /// The frame is of a known kind, but not the one expected here.
    #[error("expected a {expected:?} frame, got {found:?}")]
    UnexpectedKind {
        /// What the caller asked for.
        expected: Kind,
        /// What the header says.
        found: Kind,
    },
    /// The announced or actual payload exceeds the kind's size cap.
    #[error("{kind:?} payload of {len} bytes exceeds its cap of {cap} bytes")]
    TooLarge {
        /// Kind of the frame.
        kind: Kind,
        /// Payload length.
        len: usize,
        /// Cap for that kind.
        cap: usize,
    },
    /// Fewer bytes than the header or the message needs.
    #[error("frame truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// A tensor-carrying message announced more tensor bytes than its kind allows.
    #[error("{kind:?} announces a {len}-byte tensor, over its cap of {cap} bytes")]
    TensorTooLarge {
        /// Kind of the message.
        kind: Kind,
        /// Announced tensor length.
        len: u64,
        /// Cap for that kind.
        cap: u64,
    },
    /// A chunk is empty or would run past the tensor length its message announced.
    #[error("chunk of {got} bytes does not fit the {remaining} tensor bytes still expected")]
    ChunkOverrun {
        /// Bytes the message still expected.
        remaining: u64,
        /// Bytes in the chunk.
        got: usize,
    },
    /// The payload decoded, but bytes were left over.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The payload decodes, but is not the message's one canonical encoding (e.g. an
    /// overlong varint): refused so every message has exactly one byte form.
    #[error("{kind:?} payload is not canonically encoded")]
    NonCanonical {
        /// Kind of the frame.
        kind: Kind,
    },
    /// The payload is not a valid postcard encoding of the message.
    #[error("malformed {kind:?} payload: {reason}")]
    Malformed {
        /// Kind of the frame.
        kind: Kind,
        /// postcard's description of the problem.
        reason: postcard::Error,
    },
}
