//! burn models and training (feature `model`).
//!
//! burn 0.22 has no backend type parameter: the [`burn::tensor::Device`] picks the
//! backend at run time, so one model type runs on flex, ndarray or (in the cloud) CUDA.

mod backend;
pub mod lenet;
pub mod minilm;
pub mod params;
pub mod smoke;
pub mod split;

pub use backend::ComputeBackend;
