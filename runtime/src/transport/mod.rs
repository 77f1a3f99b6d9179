//! QUIC transport: quinn endpoints with rustls (ring provider).
//!
//! Guarantees:
//! - TLS 1.3 only, ALPN [`ALPN`], 0-RTT disabled on both sides (replayable early data is
//!   never accepted).
//! - All connection limits (streams, windows, idle timeout, keep-alive) come from
//!   [`TransportLimits`], one documented place, never from quinn's defaults.
//! - No application frame is sent or processed before the Hello/HelloAck exchange.
//! - Certificate problems (missing file, not PEM, wrong CA) are typed errors naming the
//!   file or peer, never panics.

mod client;
mod envelope_io;
mod error;
mod framed;
mod limits;
pub mod link;
pub mod pki;
pub mod tls;

pub use client::{HelloReport, OpenSession, client_endpoint, hello, open_session};
pub use envelope_io::{
    InFlight, Inbound, Received, STREAM_REFUSED, read_envelope, receive_envelope, send_envelope,
    send_envelope_stream,
};
pub use error::TransportError;
pub use framed::{read_frame, read_tensor_message, write_frame, write_tensor_message};
pub use limits::{MIN_STREAM_RATE, TransportLimits, slow_link_time};

/// ALPN protocol id: a TLS peer that is not tandem fails the handshake instead of
/// receiving frames it cannot parse.
pub const ALPN: &[u8] = b"tandem/1";

/// The DNS name the cloud's certificate is issued for and devices verify by default.
pub const DEFAULT_SERVER_NAME: &str = "tandem-cloud";
