//! tandem's cloud peer.
//!
//! Serves many devices over QUIC. Today it answers the Hello exchange; the split
//! fine-tuning top half and FL aggregation arrive on top of the same [`Server`].
//!
//! Guarantees:
//! - A connection's first stream must carry a valid [`Hello`](tandem_runtime::wire::Hello)
//!   with a common protocol version; anything else closes that connection with a typed
//!   [`CloseCode`](tandem_runtime::wire::CloseCode) and never affects other devices.
//! - Shutting down closes every connection with `ShuttingDown` and waits for the
//!   closes to be delivered.

mod server;

pub use server::{ServeError, Server};
