//! Sans-I/O session state machines, after quinn-proto: no sockets, no clock. Inputs are
//! `handle_*(now, ..)` calls; outputs are pulled with `poll_transmit` (messages to send),
//! `poll_timeout` (when to call `handle_timeout` next) and `poll_event` (what the
//! application must act on). After any input, drain all three.
//!
//! The transport (a thin quinn loop) and the in-memory test harness drive the same
//! machines, so retries, deadlines and duplicate handling are tested deterministically
//! with a virtual clock, latency, loss and reordering.

#[cfg(any(test, feature = "check"))]
pub mod check;
mod envelope;
pub mod fl;
pub mod split;
pub mod step_limits;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod ops;

pub use envelope::Envelope;
