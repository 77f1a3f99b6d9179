//! Federated learning in the cloud: aggregation [`strategy`] (a round [`apply`]), update
//! [`validate`]ion, the run's [`membership`] (declared example counts), a round's updates
//! bounded against its medians ([`round_bounds`]), central differential privacy ([`central_dp`], its [`accountant`]),
//! [`secure`] aggregation (the simulation's glue to `tandem_runtime::fl::secagg`),
//! hostile clients for experiments ([`byzantine`], the device's), the run's [`state`] on disk, and with
//! feature `model` the networked `app` (`serve --app fl`) and `simulate`: many clients
//! in one process through the same code as a networked round, on heterogeneous devices
//! that may [`adapt`] to a deadline.

pub mod accountant;
#[cfg(feature = "model")]
pub mod adapt;
#[cfg(feature = "model")]
pub mod app;
pub mod apply;
/// Hostile clients, shared with the device's test mode.
pub use tandem_runtime::fl::byzantine;
pub mod central_dp;
#[cfg(feature = "model")]
mod commit;
pub mod membership;
#[cfg(feature = "model")]
pub mod record;
pub mod round_bounds;
pub mod secure;
#[cfg(feature = "model")]
pub mod simulate;
pub mod state;
pub mod strategy;
pub mod validate;
