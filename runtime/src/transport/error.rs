//! Transport errors.

use crate::wire::{CloseCode, WireError};
use std::path::PathBuf;

/// Why a connection, handshake or frame exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A certificate or key file could not be read or parsed.
    #[error("{what} {path}: {reason}")]
    Certificate {
        /// "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match its certificate).
    #[error("TLS configuration refused")]
    Tls(#[from] rustls::Error),
    /// A socket could not be bound.
    #[error("cannot bind UDP socket {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// quinn refused to start the connection (e.g. an invalid server name).
    #[error("cannot start the connection")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed by the peer.
    #[error("connection failed")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer closed the connection with one of tandem's close codes.
    #[error("peer closed the connection: {}", .0.reason())]
    Closed(CloseCode),
    /// Writing a frame failed.
    #[error("sending failed")]
    Write(#[from] quinn::WriteError),
    /// Reading a frame failed (stream reset or closed early).
    #[error("receiving failed")]
    Read(#[from] quinn::ReadExactError),
    /// The peer's bytes are not a valid frame.
    #[error("invalid frame from peer")]
    Wire(#[from] WireError),
    /// The cloud does not serve what the Hello asked for (model, cut, codec), with its
    /// reason.
    #[error("the cloud refused this session: {0}")]
    Unserved(String),
    /// The peer closed with `Normal` and this line: its work with this device is done (a
    /// cloud whose federated run is over says so; a device's run ends there).
    #[error("{0}")]
    Finished(String),
    /// The cloud holds nothing of this device's run at the step its Hello named, with its
    /// reason: the device goes back to its checkpoint.
    #[error("the cloud cannot resume this run here: {0}")]
    ResumeRefused(String),
    /// The peer broke the protocol (e.g. sent no common version).
    #[error("peer violated the protocol: {0}")]
    Protocol(String),
}

impl TransportError {
    /// Maps a connection error to [`TransportError::Closed`] when the peer used one of
    /// tandem's close codes, so callers see "no common protocol version" rather than a
    /// bare number.
    pub fn from_connection(err: quinn::ConnectionError) -> Self {
        if let quinn::ConnectionError::ApplicationClosed(close) = &err
            && let Some(code) = CloseCode::from_code(close.error_code.into_inner())
        {
            let reason = || String::from_utf8_lossy(&close.reason).into_owned();
            match code {
                CloseCode::Normal => return Self::Finished(reason()),
                CloseCode::Unserved => return Self::Unserved(reason()),
                CloseCode::ResumeRefused => return Self::ResumeRefused(reason()),
                _ => {}
            }
            return Self::Closed(code);
        }
        Self::Connection(err)
    }
}
