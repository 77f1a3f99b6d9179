//! tandem's cloud peer.
//!
//! Serves many devices over QUIC: the Hello exchange, then split steps and federated
//! rounds computed by a [`CloudApp`]; `split_app::SplitApp` (feature `model`) trains MiniLM top halves.
//!
//! Guarantees:
//! - A connection's first stream must carry a valid [`Hello`](tandem_runtime::wire::Hello)
//!   with a common protocol version; anything else closes that connection with a typed
//!   [`CloseCode`](tandem_runtime::wire::CloseCode) and never affects other devices.
//! - Shutting down closes every connection with `ShuttingDown` and waits for the
//!   closes to be delivered.
//! - One device cannot make the cloud hold more than a bound for it: its outbox is
//!   bounded and every send has a deadline ([`OutboxLimits`]; past either, its connection
//!   is closed), and its streams are read within the budgets of its Hello.

mod app;
pub mod fl;
mod hub;
mod outbox;
mod server;
#[cfg(feature = "model")]
pub mod split_app;
#[cfg(feature = "model")]
pub mod tops_memory;
mod workers;

pub use app::{
    AdmitJob, Admitted, BatchJob, CloudApp, HelloOnly, ReadyStep, Refused, RoundJob, RoundOutcome,
    RoundQuorum, SplitJob, StepReply, jobs_in_turn,
};
pub use hub::HubSettings;
pub use outbox::OutboxLimits;
pub use server::{ServeError, Server, ServerStats};
