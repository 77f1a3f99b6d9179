//! The 16-byte frame header and whole-frame encoding and decoding.

use super::{Kind, MAGIC, MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION, SCHEMA_HASH, WireError};

/// Length of the fixed header that starts every frame.
pub const HEADER_LEN: usize = 16;

/// A validated frame header. Only [`FrameHeader::parse`] and [`FrameHeader::new`] make
/// one, so a value of this type always has a known kind and a length within its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    version: u16,
    kind: Kind,
    len: u32,
}

impl FrameHeader {
    /// A header of this build's version for a payload of `len` bytes.
    pub fn new(kind: Kind, len: usize) -> Result<Self, WireError> {
        let cap = kind.max_payload();
        if len > cap {
            return Err(WireError::TooLarge { kind, len, cap });
        }
        // cap < u32::MAX for every kind, so this cannot truncate.
        Ok(Self {
            version: PROTOCOL_VERSION,
            kind,
            len: len as u32,
        })
    }

    /// Validates the first [`HEADER_LEN`] bytes of `bytes`: magic, version, schema hash,
    /// kind and the payload length against the kind's cap, in that order.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                have: bytes.len(),
            });
        };
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != MAGIC {
            return Err(WireError::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes([h[4], h[5]]);
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(WireError::UnsupportedVersion {
                found: version,
                min: MIN_PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
            });
        }
        let raw_kind = u16::from_le_bytes([h[6], h[7]]);
        let schema = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if schema != SCHEMA_HASH {
            return Err(WireError::SchemaMismatch {
                found: schema,
                expected: SCHEMA_HASH,
            });
        }
        let kind = Kind::from_u16(raw_kind).ok_or(WireError::UnknownKind(raw_kind))?;
        let len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
        let cap = kind.max_payload();
        if len as usize > cap {
            return Err(WireError::TooLarge {
                kind,
                len: len as usize,
                cap,
            });
        }
        Ok(Self { version, kind, len })
    }

    /// The header's 16 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&(self.kind as u16).to_le_bytes());
        out[8..12].copy_from_slice(&SCHEMA_HASH.to_le_bytes());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Protocol version of the frame.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Kind of the payload.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Payload length in bytes (already checked against the kind's cap).
    pub fn payload_len(&self) -> usize {
        self.len as usize
    }
}

/// Encodes `msg` as one whole frame: header then postcard payload.
///
/// Fails with [`WireError::TooLarge`] if the payload would exceed the kind's cap, so a
/// sender never emits a frame its peer must refuse.
pub fn encode_frame<M: Message>(msg: &M) -> Result<Vec<u8>, WireError> {
    let payload = postcard::to_allocvec(msg).map_err(|reason| WireError::Malformed {
        kind: M::KIND,
        reason,
    })?;
    let header = FrameHeader::new(M::KIND, payload.len())?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&header.to_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes the payload that follows `header`. `payload` must be exactly the announced
/// length, the message must consume all of it, and it must be the message's canonical
/// encoding (shortest varints), the one [`encode_frame`] produces.
pub fn decode_payload<M: Message>(header: &FrameHeader, payload: &[u8]) -> Result<M, WireError> {
    if header.kind != M::KIND {
        return Err(WireError::UnexpectedKind {
            expected: M::KIND,
            found: header.kind,
        });
    }
    let len = header.payload_len();
    if payload.len() < len {
        return Err(WireError::Truncated {
            needed: len,
            have: payload.len(),
        });
    }
    if payload.len() > len {
        return Err(WireError::TrailingBytes(payload.len() - len));
    }
    let (msg, rest) =
        postcard::take_from_bytes::<M>(payload).map_err(|reason| WireError::Malformed {
            kind: M::KIND,
            reason,
        })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    // postcard accepts overlong varints; re-encoding (payloads are at most 4 KiB) finds
    // them, so a message has exactly one accepted encoding.
    if postcard::to_allocvec(&msg).ok().as_deref() != Some(payload) {
        return Err(WireError::NonCanonical { kind: M::KIND });
    }
    Ok(msg)
}
