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

/// Runs `f` holding the process's lock on burn's random generator. burn keeps one
/// generator per device kind for the whole process: a thread that seeds it and then
/// initialises a model must not interleave with another thread's draws, or the same
/// seed gives other weights (seen as a failed reproducibility test when the federated
/// tests ran side by side). Every random initialisation of the federated tasks, seeded
/// or thrown away, holds it; the lock is not re-entrant.
pub fn with_device_rng<T>(f: impl FnOnce() -> T) -> T {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic inside another holder leaves nothing to repair: the generator is reseeded
    // by whoever needs a seed.
    let _held = RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f()
}
