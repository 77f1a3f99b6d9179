//! The wire format: a fixed 16-byte header, then a postcard payload.
//!
//! Guarantees (specified byte by byte in `runtime/WIRE.md`):
//! - A header is validated (magic, protocol version, schema hash, known kind, payload
//!   length within the kind's cap) before any payload byte is read or allocated.
//! - A payload is decoded only from a slice of exactly the announced length, and
//!   trailing bytes after the message are an error.
//! - Every failure is a typed [`WireError`]; decoding never panics on any input.

mod close;
mod error;
mod frame;
mod message;

pub use close::CloseCode;
pub use error::WireError;
pub use frame::{FrameHeader, HEADER_LEN, decode_payload, encode_frame};
pub use message::{Hello, HelloAck, Kind, Message, NodeName, SoftwareName};

/// The 4 bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"TNDM";

/// The protocol version this build speaks. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Describes every message layout of this protocol version. Any change to a message's
/// fields must change this text by hand, so that peers built from different schemas
/// refuse each other instead of misreading bytes. Nothing derives it from the types: the
/// golden-byte tests catch most layout changes, not all (a wider integer type encodes
/// small values identically), so review message changes against it.
const SCHEMA: &str = "tandem-wire/1 \
    Hello{min_version:u16,max_version:u16,node:str<64>,software:str<32>} \
    HelloAck{version:u16,peer:str<64>,software:str<32>}";

/// FNV-1a hash of [`SCHEMA`], carried in every header.
pub const SCHEMA_HASH: u32 = fnv1a(SCHEMA.as_bytes());

const fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash = 0x811c_9dc5u32;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// The software name and version sent in Hello/HelloAck, e.g. `tandem 0.1.0`.
pub fn software_name(binary: &str) -> SoftwareName {
    let mut name = SoftwareName::new();
    for part in [binary, " ", env!("CARGO_PKG_VERSION")] {
        // Truncation is harmless here: the field is informational.
        for c in part.chars() {
            if name.push(c).is_err() {
                return name;
            }
        }
    }
    name
}

#[cfg(test)]
mod tests;
