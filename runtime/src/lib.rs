//! tandem's device runtime.
//!
//! - [`codec`]: tensor codecs (low-rank, top-k with error feedback, int8, f16, DCT) with
//!   honest error reports and a per-step chooser.
//! - [`wire`]: the framed postcard messages that device and cloud exchange. Every frame
//!   header is validated and every payload size-capped before anything is decoded.
//! - [`fl`]: federated learning: parameter layouts, updates on the wire, tasks (LeNet-5
//!   on Fashion-MNIST) and local training.
//! - [`rng`]: a seeded generator for partitions and sampling, the same on every platform.
//! - [`session`]: sans-I/O state machines (split steps and FL rounds) with timers driven by
//!   `now`, tested in an in-memory harness with a virtual clock, latency, loss and reordering.
//! - [`transport`]: QUIC (quinn + rustls) endpoints, certificates and the connection
//!   limits, all set in one place.
//! - `model` (feature `model`, on by default): burn models and training. Without it the
//!   crate builds without burn, which keeps aarch64 test runs under qemu short.
//! - [`logging`], [`paths`], [`sealed`] (crash-safe state files), `plot` (feature
//!   `model`): what both binaries share.
//!
//! This crate forbids `unsafe_code`; the SIMD kernels live in `tandem-kernels`.

pub mod codec;
#[cfg(feature = "model")]
pub mod data;
pub mod fl;
pub mod fnv;
pub mod logging;
pub mod memory;
#[cfg(feature = "model")]
pub mod model;
pub mod paths;
#[cfg(feature = "model")]
pub mod plot;
pub mod rng;
pub mod sealed;
pub mod session;
pub mod transport;
pub mod wire;
