//! The federated runs the reliability scenarios drive: `tandem-cloud serve --app fl` and
//! [`DEVICES`] `tandem fl` processes on loopback, and what a run committed (each round's
//! contributors, the final state file) checked against a run nothing disturbed.
//!
//! Every run has the same seed, data and settings, and the same participants: all
//! devices in every round, which waits for every update until its deadline. So a run
//! that lost or doubled no update ends with the same state file as the undisturbed one,
//! byte for byte (global model, server momentum, round). Top-k with error feedback up and
//! FedAvgM's server momentum make a device or a cloud that forgot its state show there.

use crate::fl::{device_name, issue_device_certificates};
use crate::split::CloudProcess;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Devices in a run; each takes part in every round.
pub const DEVICES: usize = 4;

/// Device `i` holds client slice `i/CLIENTS` of Fashion-MNIST's training set (1,500
/// images: rounds of about a second).
const CLIENTS: usize = 40;

/// A run that has not finished after this long is stuck.
const RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One federated run's files and flags.
pub struct FlRun {
    bin: PathBuf,
    /// The cloud's `--state` (its metrics too).
    pub state: PathBuf,
    /// Device checkpoints and logs go beside the state, named after the run.
    files: PathBuf,
    name: String,
    rounds: u64,
    /// The update codec.
    codec: &'static str,
    /// Devices per round: [`DEVICES`], or one more for a guest device.
    per_round: usize,
    /// The rounds' deadline in seconds (the cloud's default when `None`).
    deadline_secs: Option<u64>,
}

impl FlRun {
    pub fn new(bin: &Path, dir: &Path, name: &str, rounds: u64) -> Result<Self> {
        issue_device_certificates(bin, DEVICES)?;
        Ok(Self {
            bin: bin.to_owned(),
            state: dir.join(format!("{name}-cloud")),
            files: dir.to_owned(),
            name: name.to_owned(),
            rounds,
            codec: "topk:ratio=0.01",
            per_round: DEVICES,
            deadline_secs: None,
        })
    }

    /// The run with rounds of `seconds` to report.
    pub fn with_deadline(self, seconds: u64) -> Self {
        Self {
            deadline_secs: Some(seconds),
            ..self
        }
    }

    /// The run with identity updates (which a forger can make valid), and with
    /// `guest_slot` room in every round for one device beside the run's own (rounds then
    /// wait for it).
    pub fn with_identity_updates(self, guest_slot: bool) -> Self {
        Self {
            codec: "identity",
            per_round: DEVICES + usize::from(guest_slot),
            ..self
        }
    }

    /// The cloud's log (its stderr, every process appended).
    pub fn cloud_log(&self) -> PathBuf {
        self.files.join(format!("{}-cloud.log", self.name))
    }

    /// Starts the cloud, on `listen` (a restart keeps its address) or a free port.
    pub fn start_cloud(&self, listen: Option<&str>) -> Result<CloudProcess> {
        let rounds = self.rounds.to_string();
        let devices = self.per_round.to_string();
        let state = self.state.to_string_lossy();
        let deadline = self.deadline_secs.map(|s| s.to_string());
        let deadline_args = deadline
            .iter()
            .flat_map(|s| ["--deadline-secs", s.as_str()]);
        let args: Vec<&str> = [
            "--app",
            "fl",
            "--task",
            "fmnist",
            "--rounds",
            &rounds,
            "--clients-per-round",
            &devices,
            "--strategy",
            "fedavgm",
            "--codec",
            self.codec,
            "--local-lr",
            "0.05",
            "--state",
            &state,
        ]
        .into_iter()
        .chain(deadline_args)
        .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.cloud_log())?;
        CloudProcess::start_logging(
            &self.bin,
            listen.unwrap_or("127.0.0.1:0"),
            &args,
            log.into(),
        )
    }

    /// Device `i` against `addr`, continuing from its checkpoint, its output appended to
    /// its log.
    pub fn spawn_device(&self, i: usize, addr: &str) -> Result<Child> {
        let node = device_name(i);
        let file = |ext: &str| self.files.join(format!("{}-{node}.{ext}", self.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file("log"))?;
        Command::new(self.bin.join("tandem"))
            .args(["fl", "--cloud", addr, "--node", &node])
            .args(["--client", &format!("{i}/{CLIENTS}"), "--seed", "1"])
            .arg("--checkpoint")
            .arg(file("ckpt"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start tandem fl")
    }

    /// The last round committed so far (the cloud's metrics); 0 before the first.
    pub fn last_round(&self) -> u64 {
        self.metrics()
            .ok()
            .and_then(|json| json["rounds"].as_array()?.last()?["round"].as_u64())
            .unwrap_or(0)
    }

    fn metrics(&self) -> Result<serde_json::Value> {
        let path = self.state.join("metrics.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    }

    /// What the run committed, once it has ended.
    pub fn committed(&self) -> Result<Committed> {
        let json = self.metrics()?;
        let records = json["rounds"]
            .as_array()
            .context("metrics without rounds")?;
        let rounds = records
            .iter()
            .map(|r| {
                let round = r["round"].as_u64().context("a record without a round")?;
                let names = r["contributors"]
                    .as_array()
                    .context("a record without contributors")?;
                let names = names
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned).context("a contributor name"))
                    .collect::<Result<_>>()?;
                Ok((round, names))
            })
            .collect::<Result<_>>()?;
        let accuracy = records
            .last()
            .and_then(|r| r["accuracy"].as_f64())
            .context("metrics without an accuracy")?;
        let seconds = records
            .iter()
            .map(|r| {
                r["seconds"]
                    .as_f64()
                    .context("a record without its seconds")
            })
            .collect::<Result<_>>()?;
        let state_file = self.state.join("fl-state.bin");
        Ok(Committed {
            rounds,
            accuracy,
            seconds,
            state: std::fs::read(&state_file)
                .with_context(|| format!("cannot read {}", state_file.display()))?,
        })
    }

    /// Runs the devices, device `i` dialling `targets[i]` (the cloud's address, or a
    /// relay's), until the cloud has committed the last round, calling `disturb` (with
    /// the cloud and the devices) each time its next moment comes; `disturb` returns the
    /// wait before the next one, `None` for no more. A device that fails or is killed
    /// meanwhile is started again. Returns the devices restarted that way.
    pub fn drive(
        &self,
        mut cloud: CloudProcess,
        targets: &[String; DEVICES],
        mut disturb: impl FnMut(&mut CloudProcess, &mut [Child]) -> Result<Option<Duration>>,
        first: Option<Duration>,
    ) -> Result<u32> {
        let mut devices = (0..DEVICES)
            .map(|i| self.spawn_device(i, &targets[i]))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        let mut next = first.map(|wait| Instant::now() + wait);
        let mut restarts = 0;
        let outcome = loop {
            if cloud.printed(|line| line.starts_with("fl: ") && line.contains(" rounds done")) {
                break Ok(restarts);
            }
            if started.elapsed() > RUN_TIMEOUT {
                break Err(anyhow::anyhow!(
                    "the run did not finish within {RUN_TIMEOUT:?} (logs in {})",
                    self.files.display()
                ));
            }
            for (i, device) in devices.iter_mut().enumerate() {
                // Exit 0 is the run's end, which the cloud told it (its line may not be
                // read yet): only a failed or killed device is started again.
                if device.try_wait()?.is_some_and(|status| !status.success()) {
                    restarts += 1;
                    *device = self.spawn_device(i, &targets[i])?;
                }
            }
            if next.is_some_and(|at| Instant::now() >= at) {
                match disturb(&mut cloud, &mut devices) {
                    Ok(wait) => next = wait.map(|w| Instant::now() + w),
                    Err(err) => break Err(err),
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for device in &mut devices {
            let _ = device.kill();
            let _ = device.wait();
        }
        cloud.stop();
        outcome
    }
}

/// Every device dialling `cloud` itself.
pub fn direct(cloud: &CloudProcess) -> [String; DEVICES] {
    std::array::from_fn(|_| cloud.addr.clone())
}

/// What a run committed.
pub struct Committed {
    /// Each committed round's number and contributors, in the order of the metrics.
    pub rounds: Vec<(u64, Vec<String>)>,
    /// The last round's test accuracy.
    pub accuracy: f64,
    /// Each round's wall time, evaluation included.
    pub seconds: Vec<f64>,
    /// The cloud's state file: round, global model and server moments.
    pub state: Vec<u8>,
}

/// What a disturbed run lost or doubled against the undisturbed one.
#[derive(Debug, Default, PartialEq)]
pub struct FlVerdict {
    /// Updates the undisturbed run aggregated that this run did not (a round missing
    /// counts each of its updates).
    pub lost: u64,
    /// Updates aggregated more than once in a round, and rounds committed more than once.
    pub doubled: u64,
    /// The final state files are the same bytes.
    pub same_state: bool,
}

/// `run` against `reference`.
pub fn check(run: &Committed, reference: &Committed) -> FlVerdict {
    let mut by_round: HashMap<u64, Vec<&Vec<String>>> = HashMap::new();
    for (round, names) in &run.rounds {
        by_round.entry(*round).or_default().push(names);
    }
    let mut verdict = FlVerdict {
        same_state: run.state == reference.state,
        ..FlVerdict::default()
    };
    for (round, expected) in &reference.rounds {
        let Some(records) = by_round.get(round) else {
            verdict.lost += expected.len() as u64;
            continue;
        };
        verdict.doubled += records.len() as u64 - 1;
        let names = records[0];
        let mut seen = std::collections::HashSet::new();
        verdict.doubled += names.iter().filter(|n| !seen.insert(*n)).count() as u64;
        verdict.lost += expected.iter().filter(|n| !names.contains(n)).count() as u64;
    }
    verdict
}

/// An error unless `run` ended where `reference` did.
pub fn require_finished(run: &Committed, reference: &Committed, name: &str) -> Result<()> {
    let last = |c: &Committed| c.rounds.last().map_or(0, |r| r.0);
    if last(run) != last(reference) {
        bail!(
            "{name}: ended at round {}, not {}",
            last(run),
            last(reference)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(rounds: &[(u64, &[&str])], state: &[u8]) -> Committed {
        Committed {
            rounds: rounds
                .iter()
                .map(|(r, names)| (*r, names.iter().map(|n| n.to_string()).collect()))
                .collect(),
            accuracy: 0.5,
            seconds: Vec::new(),
            state: state.to_vec(),
        }
    }

    #[test]
    fn counts_missing_and_repeated_updates_and_rounds() {
        let reference = committed(
            &[(1, &["a", "b"]), (2, &["a", "b"]), (3, &["a", "b"])],
            b"s",
        );
        assert_eq!(
            check(&reference, &reference),
            FlVerdict {
                lost: 0,
                doubled: 0,
                same_state: true
            }
        );
        // Round 2 missing, b missing from round 1, a twice in round 3, round 3 twice.
        let run = committed(
            &[(1, &["a"]), (3, &["a", "a", "b"]), (3, &["a", "b"])],
            b"t",
        );
        assert_eq!(
            check(&run, &reference),
            FlVerdict {
                lost: 3,
                doubled: 2,
                same_state: false
            }
        );
    }
}
