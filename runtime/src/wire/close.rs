//! Application close codes carried in QUIC CONNECTION_CLOSE frames.

/// Why a peer closed the connection. The numeric value is the QUIC application error
/// code, so a peer learns the reason without any further frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum CloseCode {
    /// Work is done; nothing went wrong.
    Normal = 0,
    /// The peer sent bytes that are not a valid frame, or a frame out of order.
    ProtocolViolation = 1,
    /// No protocol version in common.
    UnsupportedVersion = 2,
    /// The peer's schema hash differs: same version number, different messages.
    SchemaMismatch = 3,
    /// A frame exceeded the size cap of its kind.
    FrameTooLarge = 4,
    /// The peer is shutting down.
    ShuttingDown = 5,
    /// The device's certificate is valid but its name is not on the cloud's allowlist,
    /// or its Hello claims another name than its certificate.
    NotAllowed = 6,
    /// The peer cannot serve what was asked (a job, cut, shape or codec it does not
    /// support); refused up front, not mid-run.
    Unserved = 7,
    /// The cloud holds nothing of the device's run at the step its Hello names (it
    /// restarted since its last snapshot, or freed the device's state): the device goes
    /// back to its checkpoint and asks again from there.
    ResumeRefused = 8,
}

impl CloseCode {
    /// The code as a QUIC varint.
    pub fn to_varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The code for a QUIC application error code, if it is one of ours.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::Normal,
            1 => Self::ProtocolViolation,
            2 => Self::UnsupportedVersion,
            3 => Self::SchemaMismatch,
            4 => Self::FrameTooLarge,
            5 => Self::ShuttingDown,
            6 => Self::NotAllowed,
            7 => Self::Unserved,
            8 => Self::ResumeRefused,
            _ => return None,
        })
    }

    /// Closes `connection` with this code and its reason.
    pub fn close(self, connection: &quinn::Connection) {
        connection.close(self.to_varint(), self.reason().as_bytes());
    }

    /// Closes `connection` with this code and `reason` (for the peer's operator; cut
    /// at [`MAX_CLOSE_REASON`] bytes on a character boundary).
    pub fn close_because(self, connection: &quinn::Connection, reason: &str) {
        let end = reason.floor_char_boundary(MAX_CLOSE_REASON);
        connection.close(self.to_varint(), &reason.as_bytes()[..end]);
    }

    /// The short human reason sent alongside the code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "done",
            Self::ProtocolViolation => "protocol violation",
            Self::UnsupportedVersion => "no common protocol version",
            Self::SchemaMismatch => "wire schema mismatch",
            Self::FrameTooLarge => "frame too large",
            Self::ShuttingDown => "shutting down",
            Self::NotAllowed => "device not allowed",
            Self::Unserved => "request not served by this peer",
            Self::ResumeRefused => "nothing of this run at that step: resume from a checkpoint",
        }
    }
}

/// The longest close reason sent: it must fit one packet with the rest of the frame.
pub const MAX_CLOSE_REASON: usize = 512;

impl From<&crate::wire::WireError> for CloseCode {
    fn from(err: &crate::wire::WireError) -> Self {
        use crate::wire::WireError as E;
        match err {
            E::UnsupportedVersion { .. } => Self::UnsupportedVersion,
            E::SchemaMismatch { .. } => Self::SchemaMismatch,
            E::TooLarge { .. } | E::TensorTooLarge { .. } | E::ChunkOverrun { .. } => {
                Self::FrameTooLarge
            }
            _ => Self::ProtocolViolation,
        }
    }
}
