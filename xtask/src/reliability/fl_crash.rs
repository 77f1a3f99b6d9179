//! The federated crash scenarios of `cargo xtask reliability crash`: `tandem fl` devices
//! killed at random moments across rounds (each restarted from its checkpoint), and
//! tandem-cloud killed mid-round (restarted on the same address and state), each against
//! a run nothing disturbed ([`super::fl_run`]).

use super::crash::uniform;
use super::fl_run::{self, Committed, DEVICES, FlRun, FlVerdict};
use crate::split::CloudProcess;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// A device kill comes this long after the last one, uniformly (a round takes about a
/// second or two).
const DEVICE_KILL_EVERY: (Duration, Duration) =
    (Duration::from_millis(300), Duration::from_millis(2500));

/// A cloud kill comes this long after the cloud (re)starts, uniformly: time for the
/// devices to reconnect and the round to get under way, or not.
const CLOUD_KILL_AFTER: (Duration, Duration) =
    (Duration::from_millis(1500), Duration::from_secs(6));

/// What one federated scenario did and found.
pub struct FlScenario {
    pub name: &'static str,
    /// Kills made.
    pub cycles: u32,
    /// Device processes started again after exiting on their own.
    restarts: u32,
    pub verdict: FlVerdict,
    rounds: usize,
    accuracy: f64,
}

impl FlScenario {
    fn judged(
        name: &'static str,
        (cycles, restarts): (u32, u32),
        run: &FlRun,
        reference: &Committed,
    ) -> Result<Self> {
        let committed = run.committed()?;
        fl_run::require_finished(&committed, reference, name)?;
        Ok(Self {
            name,
            cycles,
            restarts,
            verdict: fl_run::check(&committed, reference),
            rounds: committed.rounds.len(),
            accuracy: committed.accuracy,
        })
    }

    /// Whether the run ended in the undisturbed run's state, having lost and doubled
    /// nothing.
    pub fn held(&self) -> bool {
        let v = &self.verdict;
        v.lost + v.doubled == 0 && v.same_state
    }

    pub fn print(&self, reference: &Committed) {
        let v = &self.verdict;
        println!(
            "{}: {} kills, {} device processes restarted after exiting; {} rounds committed; \
             updates lost {}, doubled {}; final global model and server state {} the \
             undisturbed run's; test accuracy {:.2}% against {:.2}%",
            self.name,
            self.cycles,
            self.restarts,
            self.rounds,
            v.lost,
            v.doubled,
            if v.same_state {
                "byte for byte"
            } else {
                "DIFFERENT from"
            },
            self.accuracy * 100.0,
            reference.accuracy * 100.0
        );
    }
}

/// The run nothing disturbs.
pub fn reference(bin: &Path, dir: &Path, rounds: u64) -> Result<Committed> {
    eprintln!(
        "reliability crash: the federated run undisturbed ({rounds} rounds, {DEVICES} devices)"
    );
    let run = FlRun::new(bin, dir, "fl-clean", rounds)?;
    let cloud = run.start_cloud(None)?;
    let targets = fl_run::direct(&cloud);
    run.drive(cloud, &targets, |_, _| Ok(None), None)?;
    run.committed()
}

/// `cycles` kills of a random device at random moments, each restarted at once from its
/// checkpoint.
pub fn device_kills(
    bin: &Path,
    dir: &Path,
    (rounds, cycles, seed): (u64, u32, u64),
    reference: &Committed,
) -> Result<FlScenario> {
    eprintln!("reliability crash: tandem fl devices, {cycles} kills across {rounds} rounds");
    let run = FlRun::new(bin, dir, "fl-device-killed", rounds)?;
    let mut pick = seed | 1;
    let kills = kill_loop(&run, (cycles, seed, DEVICE_KILL_EVERY), |cloud, devices| {
        pick = pick.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        let i = (pick >> 33) as usize % DEVICES;
        devices[i].kill().context("cannot kill tandem fl")?;
        devices[i].wait()?;
        devices[i] = run.spawn_device(i, &cloud.addr)?;
        Ok(true)
    })?;
    FlScenario::judged("fl devices killed", kills, &run, reference)
}

/// `cycles` kills of tandem-cloud mid-round, each restarted on the same address and
/// state; no kill once the second-to-last round is committed, so the last process
/// finishes the run.
pub fn cloud_kills(
    bin: &Path,
    dir: &Path,
    (rounds, cycles, seed): (u64, u32, u64),
    reference: &Committed,
) -> Result<FlScenario> {
    eprintln!("reliability crash: tandem-cloud in federated rounds, {cycles} kills");
    let run = FlRun::new(bin, dir, "fl-cloud-killed", rounds)?;
    let kills = kill_loop(
        &run,
        (cycles, seed ^ 0x5eed, CLOUD_KILL_AFTER),
        |cloud, _| {
            if run.last_round() + 1 >= rounds {
                return Ok(false);
            }
            let addr = cloud.addr.clone();
            cloud.kill()?;
            *cloud = run.start_cloud(Some(&addr))?;
            Ok(true)
        },
    )?;
    FlScenario::judged("tandem-cloud killed in FL", kills, &run, reference)
}

/// Runs `run` to its end from a fresh cloud, calling `kill` at random moments (`window`
/// apart, seeded) until it has killed `cycles` times or declines (returns false). The
/// kills made, and the device processes restarted after exiting on their own.
fn kill_loop(
    run: &FlRun,
    (cycles, seed, window): (u32, u64, (Duration, Duration)),
    mut kill: impl FnMut(&mut CloudProcess, &mut [Child]) -> Result<bool>,
) -> Result<(u32, u32)> {
    let mut rng = seed.wrapping_mul(0xA24B_AED4_963E_E407) | 1;
    let mut kills = 0;
    let first = (cycles > 0).then(|| uniform(&mut rng, window));
    let cloud = run.start_cloud(None)?;
    let targets = fl_run::direct(&cloud);
    let restarts = run.drive(
        cloud,
        &targets,
        |cloud, devices| {
            if !kill(cloud, devices)? {
                return Ok(None);
            }
            kills += 1;
            Ok((kills < cycles).then(|| uniform(&mut rng, window)))
        },
        first,
    )?;
    if kills < cycles {
        eprintln!("  the run finished after {kills} kills (raise --rounds for more)");
    }
    Ok((kills, restarts))
}
