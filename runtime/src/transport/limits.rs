//! Connection limits: the one place where quinn's transport parameters are chosen.

use std::time::Duration;

/// Limits applied to every tandem QUIC connection, device and cloud alike.
///
/// The defaults are sized for a board on a home uplink: a few concurrent streams, windows
/// large enough to keep a 4 MiB tensor frame in flight at ~100 Mbit/s x 100 ms, and an
/// idle timeout long enough to survive a slow training step with keep-alives running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportLimits {
    /// Concurrent bidirectional streams the peer may open (one per request/response).
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams the peer may open.
    pub max_uni_streams: u32,
    /// Bytes the peer may send on one stream before we read them.
    pub stream_receive_window: u32,
    /// Bytes the peer may send on all streams together before we read them.
    pub receive_window: u32,
    /// Bytes we may have in flight, unacknowledged, across all streams.
    pub send_window: u64,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Ping interval that keeps a quiet connection alive (must be below `idle_timeout`).
    pub keep_alive: Duration,
    /// A device must complete its Hello within this time after the QUIC handshake, or
    /// the cloud closes the connection (keep-alives alone never hold a slot open).
    pub hello_timeout: Duration,
    /// Bytes of one device's tensors the cloud holds at once, read and not yet
    /// processed: further streams wait unread (QUIC flow control then stalls the
    /// device), and a single larger tensor is refused.
    pub held_tensor_bytes: u64,
    /// A session stream must deliver its message within this, and its tensor within
    /// this plus a second per [`MIN_STREAM_RATE`] bytes: a stream fed a byte at a time
    /// (slowloris) is refused at its deadline instead of held open.
    pub stream_deadline: Duration,
    /// Connections past the QUIC handshake and the allowlist and still without a Hello,
    /// at most; more are closed at once (each one otherwise holds its slot for
    /// `hello_timeout`).
    pub max_pending_hellos: usize,
}

/// The slowest a tensor may travel, in bytes a second (256 kbit/s), either way: a 25 MB
/// split message then has about 13 minutes on top of its base deadline.
pub const MIN_STREAM_RATE: u64 = 32 << 10;

/// How long a message with `tensor_bytes` may take to cross, either way: `base` plus a
/// second per [`MIN_STREAM_RATE`] bytes.
pub fn slow_link_time(base: Duration, tensor_bytes: u64) -> Duration {
    base.saturating_add(Duration::from_secs(tensor_bytes / MIN_STREAM_RATE))
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_bidi_streams: 16,
            max_uni_streams: 16,
            stream_receive_window: 8 << 20,
            receive_window: 32 << 20,
            send_window: 32 << 20,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(10),
            held_tensor_bytes: 128 << 20,
            stream_deadline: Duration::from_secs(10),
            max_pending_hellos: 256,
        }
    }
}

impl TransportLimits {
    /// The quinn transport configuration for these limits.
    pub fn to_quinn(&self) -> quinn::TransportConfig {
        let mut config = quinn::TransportConfig::default();
        config
            .max_concurrent_bidi_streams(self.max_bidi_streams.into())
            .max_concurrent_uni_streams(self.max_uni_streams.into())
            .stream_receive_window(self.stream_receive_window.into())
            .receive_window(self.receive_window.into())
            .send_window(self.send_window)
            .keep_alive_interval(Some(self.keep_alive));
        // Durations beyond QUIC's 2^62 ms range saturate instead of panicking.
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::MAX));
        config.max_idle_timeout(Some(idle));
        config
    }
}
