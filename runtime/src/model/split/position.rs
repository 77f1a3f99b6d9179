//! Where a device process stands in its split run: the run's name (kept in its
//! checkpoint), the process's name, the step it starts at and its checkpoint interval,
//! as its Hello tells the cloud.

/// Where a device process stands in its run, as its Hello tells the cloud (see
/// [`crate::wire::RunPlan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunPosition {
    /// The run's name, kept in checkpoints.
    pub run: u64,
    /// This process's name.
    pub process: u64,
    /// The first step this process trains.
    pub start_step: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
}

impl RunPosition {
    /// A new run, named at random.
    pub fn fresh(checkpoint_every: u64) -> Self {
        Self::resumed(random_name(), 0, checkpoint_every)
    }

    /// Run `run` resumed at `start_step` by a new process.
    pub fn resumed(run: u64, start_step: u64, checkpoint_every: u64) -> Self {
        Self {
            run,
            process: random_name(),
            start_step,
            checkpoint_every,
        }
    }
}

/// Whether a run of `steps` steps checkpoints once `done` steps are done: every
/// `every` steps (0: never) and at its end. The device's checkpoints and the cloud's
/// snapshots of its top follow the same rule, so a resume finds both.
pub fn checkpoint_due(done: u64, every: u64, steps: u64) -> bool {
    done == steps || (every > 0 && done.is_multiple_of(every))
}

/// A random non-zero name (0 means "none" on the wire).
fn random_name() -> u64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    // A failing system RNG leaves the clock: names only need to differ between starts.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(bytes).max(1)
}
