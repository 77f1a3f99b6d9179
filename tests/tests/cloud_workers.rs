//! The cloud serves everyone while one device trains: split steps run on worker threads,
//! so another device's Hello is admitted and its steps answered while a step is stuck
//! in the application; a device away longer than the idle release is forgotten (what
//! the application held for it freed); an application that batches gets the steps ready
//! together as one job, within its budget.

mod common;

use common::{Cloud, link_target, quick_link, reversed_reply};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_cloud::{BatchJob, CloudApp, HubSettings, ReadyStep, RoundOutcome, SplitJob};
use tandem_runtime::session::check::probe_activations;
use tandem_runtime::session::fl::Assignment;
use tandem_runtime::session::split::{SplitConfig, SplitDevice};
use tandem_runtime::transport::link::DeviceLink;
use tandem_runtime::wire::{Activations, Capabilities, NodeName};

/// Answers each step with its bytes reversed, on a worker, after a millisecond per
/// tensor byte; a step of "stuck" waits until the test sends on `release`. Logs steps answered and nodes forgotten,
/// and, when it batches (`batch_tokens` > 0), the devices of each job.
struct WorkerApp {
    release: Arc<Mutex<Receiver<()>>>,
    log: Arc<Mutex<Vec<String>>>,
    batch_tokens: u64,
}

impl CloudApp for WorkerApp {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT
    }

    fn split_job(
        &mut self,
        node: &NodeName,
        activations: Box<Activations>,
        tensor: Vec<u8>,
    ) -> SplitJob {
        let (release, log, node) = (self.release.clone(), self.log.clone(), node.to_string());
        Box::new(move || {
            if node == "stuck" {
                let _ = release.lock().unwrap().recv();
            }
            // A step takes a millisecond per tensor byte: a larger batch, a longer step.
            std::thread::sleep(Duration::from_millis(tensor.len() as u64));
            log.lock()
                .unwrap()
                .push(format!("{node} {}", activations.step));
            Ok(reversed_reply(activations.step, &tensor))
        })
    }

    fn forget(&mut self, node: &NodeName) {
        self.log.lock().unwrap().push(format!("{node} forgotten"));
    }

    fn batch_tokens(&self) -> u64 {
        self.batch_tokens
    }

    fn split_batch(&mut self, steps: Vec<ReadyStep>) -> BatchJob {
        if self.batch_tokens > 0 {
            let nodes: Vec<&str> = steps.iter().map(|s| s.node.as_str()).collect();
            self.log
                .lock()
                .unwrap()
                .push(format!("batch {}", nodes.join(",")));
        }
        tandem_cloud::jobs_in_turn(self, steps)
    }
}

async fn cloud(test: &str, hub: HubSettings) -> (Cloud, Sender<()>, Arc<Mutex<Vec<String>>>) {
    batching_cloud(test, hub, 0).await
}

async fn batching_cloud(
    test: &str,
    hub: HubSettings,
    batch_tokens: u64,
) -> (Cloud, Sender<()>, Arc<Mutex<Vec<String>>>) {
    let (release, released) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let app = WorkerApp {
        release: Arc::new(Mutex::new(released)),
        log: log.clone(),
        batch_tokens,
    };
    (Cloud::start_with_hub(test, hub, app).await, release, log)
}

async fn link(cloud: &Cloud, name: &str) -> DeviceLink {
    let target = link_target(cloud, name, Capabilities::SPLIT);
    quick_link(cloud, target, Duration::from_secs(5)).await
}

/// A device whose steps wait up to 30 s for their gradient (no resends in these tests).
fn split_device() -> SplitDevice {
    let config = SplitConfig {
        step_timeout: Duration::from_secs(30),
        ..SplitConfig::default()
    };
    SplitDevice::new(config, 0)
}

async fn step(link: &mut DeviceLink, machine: &mut SplitDevice) -> u64 {
    steps_of(link, machine, 1, 3).await
}

/// Sends `steps` steps of `len` bytes on `link`, one at a time; returns the last step.
async fn steps_of(link: &mut DeviceLink, machine: &mut SplitDevice, steps: u64, len: u8) -> u64 {
    let mut last = 0;
    for _ in 0..steps {
        last = one_step(link, machine, len).await;
    }
    last
}

async fn one_step(link: &mut DeviceLink, machine: &mut SplitDevice, len: u8) -> u64 {
    let tensor: Vec<u8> = (1..=len).collect();
    let activations = Activations {
        payload_len: tensor.len() as u64,
        ..probe_activations()
    };
    let (gradient, reply) = link
        .split_step(machine, activations, tensor)
        .await
        .expect("step completes");
    assert_eq!(reply, (1..=len).rev().collect::<Vec<u8>>());
    gradient.step
}

#[tokio::test]
async fn others_are_admitted_and_served_while_a_step_is_stuck() {
    let hub = HubSettings {
        workers: 2,
        ..HubSettings::default()
    };
    let (cloud, release, log) = cloud("workers-stuck", hub).await;
    let mut stuck = link(&cloud, "stuck").await;
    let stuck_step = tokio::spawn(async move {
        let mut machine = split_device();
        let step = step(&mut stuck, &mut machine).await;
        (stuck, step)
    });
    // While "stuck"'s step holds a worker: a new device is admitted and trains.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut other = tokio::time::timeout(Duration::from_secs(5), link(&cloud, "other"))
        .await
        .expect("admitted while a step is stuck");
    let mut machine = split_device();
    for want in 0..3 {
        let done = tokio::time::timeout(Duration::from_secs(5), step(&mut other, &mut machine));
        assert_eq!(done.await.expect("answered while a step is stuck"), want);
    }
    assert!(!stuck_step.is_finished());
    release.send(()).unwrap();
    let (mut stuck, step) = stuck_step.await.unwrap();
    assert_eq!(step, 0);
    assert_eq!(
        *log.lock().unwrap(),
        ["other 0", "other 1", "other 2", "stuck 0"]
    );
    stuck.close();
    other.close();
    cloud.shutdown().await;
}

#[tokio::test]
async fn devices_with_steps_of_different_sizes_take_turns() {
    let (cloud, _release, log) = cloud("workers-turns", HubSettings::default()).await;
    let (mut big, mut small) = (link(&cloud, "big").await, link(&cloud, "small").await);
    let (mut m_big, mut m_small) = (split_device(), split_device());
    // One worker; "big"'s steps take 90 ms, "small"'s 30 ms, six each, sent at once.
    tokio::join!(
        steps_of(&mut big, &mut m_big, 6, 90),
        steps_of(&mut small, &mut m_small, 6, 30)
    );
    let order: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(order.len(), 12, "{order:?}");
    // While both have steps left, neither runs twice in a row: the small device is not
    // starved by the big one, nor the big one by the small one's quicker turns.
    let both_left = order.len() - 1;
    for pair in order[..both_left].windows(2) {
        assert_ne!(pair[0], pair[1], "a device ran twice in a row: {order:?}");
    }
    big.close();
    small.close();
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_device_away_past_the_idle_release_is_forgotten() {
    let hub = HubSettings {
        workers: 1,
        idle_release: Duration::from_millis(200),
        ..HubSettings::default()
    };
    let (cloud, _release, log) = cloud("workers-idle", hub).await;
    let mut device = link(&cloud, "pi").await;
    let mut machine = split_device();
    step(&mut device, &mut machine).await;
    // Connected and quiet: kept.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(*log.lock().unwrap(), ["pi 0"]);
    device.close();
    let mut forgotten = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if log.lock().unwrap().iter().any(|l| l == "pi forgotten") {
            forgotten = true;
            break;
        }
    }
    assert!(
        forgotten,
        "the cloud kept the device: {:?}",
        log.lock().unwrap()
    );
    cloud.shutdown().await;
}

#[tokio::test]
async fn steps_ready_together_run_as_one_job_within_the_batch_budget() {
    // One worker; each probe step is one sequence of one token: two fit the budget.
    let (cloud, release, log) = batching_cloud("workers-batch", HubSettings::default(), 2).await;
    let mut stuck = link(&cloud, "stuck").await;
    let stuck_step = tokio::spawn(async move {
        let mut machine = split_device();
        step(&mut stuck, &mut machine).await;
        stuck
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Three devices' steps wait behind the stuck one, then run as two jobs: two
    // together (the budget), then the third.
    let mut waiting = Vec::new();
    for name in ["a", "b", "c"] {
        let mut device = link(&cloud, name).await;
        waiting.push(tokio::spawn(async move {
            let mut machine = split_device();
            let step = step(&mut device, &mut machine).await;
            (device, step)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.send(()).unwrap();
    for done in waiting {
        let (mut device, step) = tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(step, 0);
        device.close();
    }
    stuck_step.await.unwrap().close();
    let batches: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("batch ").map(str::to_string))
        .collect();
    let sizes: Vec<usize> = batches.iter().map(|b| b.split(',').count()).collect();
    assert_eq!(sizes, [1, 2, 1], "{batches:?}");
    assert_eq!(batches[0], "stuck");
    let mut rest: Vec<&str> = batches[1..].iter().flat_map(|b| b.split(',')).collect();
    rest.sort_unstable();
    assert_eq!(rest, ["a", "b", "c"]);
    cloud.shutdown().await;
}

/// Commits round 1 on a worker: the job tells `started` which thread it runs on, waits
/// for `release`, and logs that it committed.
struct SlowCommit {
    started: Sender<String>,
    release: Arc<Mutex<Receiver<()>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl CloudApp for SlowCommit {
    fn capabilities(&self) -> Capabilities {
        Capabilities::FL
    }

    fn round_tasks(&mut self, round: u64, participants: &[NodeName]) -> Option<Vec<Assignment>> {
        (round == 1).then(|| {
            let task = common::round_task(round, 4);
            Assignment::same_for_all(&task, &[0; 4], participants)
        })
    }

    fn round_ended(&mut self, _outcome: RoundOutcome) {
        self.log.lock().unwrap().push("committed on the hub".into());
    }

    fn round_job(&mut self, outcome: RoundOutcome) -> tandem_cloud::RoundJob {
        let (started, release, log) =
            (self.started.clone(), self.release.clone(), self.log.clone());
        let committed = matches!(outcome, RoundOutcome::Committed { .. });
        Box::new(move || {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            let _ = started.send(thread.clone());
            let _ = release.lock().unwrap().recv();
            log.lock()
                .unwrap()
                .push(format!("committed {committed} on {thread}"));
        })
    }
}

/// Issue 30 item 9: a round's commit (decode, aggregate, evaluate, write) runs on a
/// worker: while it takes its time the hub admits another device, and the round's
/// device hears the result only once the commit is done.
#[tokio::test]
async fn a_round_commits_on_a_worker_while_the_hub_admits_others() {
    use tandem_runtime::session::fl::RoundClient;
    use tandem_runtime::wire::Join;
    let (started, starts) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let app = SlowCommit {
        started,
        release: Arc::new(Mutex::new(released)),
        log: log.clone(),
    };
    let cloud = Cloud::start_with_hub("workers-commit", HubSettings::default(), app).await;
    let target = link_target(&cloud, "a", Capabilities::FL);
    let mut a = quick_link(&cloud, target, Duration::from_secs(5)).await;
    let node = NodeName::try_from("a").unwrap();
    a.join(Join {
        node: node.clone(),
        num_examples: 10,
        capabilities: Capabilities::FL,
    })
    .await
    .unwrap();
    let round = tokio::spawn(async move {
        let mut machine = RoundClient::new(Duration::from_secs(5));
        let result = a
            .run_round(&mut machine, |task, _| {
                common::zero_update(&node, task.round)
            })
            .await;
        a.close();
        result
    });
    let thread = tokio::task::spawn_blocking(move || starts.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the commit started");
    assert!(thread.starts_with("tandem-worker"), "committed on {thread}");
    // The hub is free: another device is admitted while the commit waits.
    let target = link_target(&cloud, "b", Capabilities::FL);
    let mut b = tokio::time::timeout(
        Duration::from_secs(5),
        quick_link(&cloud, target, Duration::from_secs(5)),
    )
    .await
    .expect("admitted while a round commits");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !round.is_finished(),
        "the result went out before the commit"
    );
    release.send(()).unwrap();
    let result = round.await.unwrap().unwrap().expect("a result");
    assert!(result.committed);
    assert_eq!(
        *log.lock().unwrap(),
        [format!("committed true on {thread}")]
    );
    b.close();
    cloud.shutdown().await;
}

/// Admits "slow" after work on a worker (building its top, reading its snapshot): the
/// work tells `started` which thread it runs on and waits for `release`; every other
/// device is admitted at once. Serves split steps with their bytes reversed.
struct SlowAdmit {
    started: Sender<String>,
    release: Arc<Mutex<Receiver<()>>>,
    /// What the admission work built, for [`CloudApp::admit_built`] to take.
    built: Arc<Mutex<Vec<String>>>,
}

impl CloudApp for SlowAdmit {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT
    }

    fn admit_job(&mut self, hello: &tandem_runtime::wire::Hello) -> tandem_cloud::AdmitJob {
        if hello.node.as_str() != "slow" {
            return tandem_cloud::AdmitJob::Decided(Ok(tandem_cloud::Admitted::default()));
        }
        let (started, release, built) = (
            self.started.clone(),
            self.release.clone(),
            self.built.clone(),
        );
        tandem_cloud::AdmitJob::Build(Box::new(move || {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            let _ = started.send(thread.clone());
            let _ = release.lock().unwrap().recv();
            built.lock().unwrap().push(thread);
        }))
    }

    fn admit_built(
        &mut self,
        hello: &tandem_runtime::wire::Hello,
    ) -> Result<tandem_cloud::Admitted, tandem_cloud::Refused> {
        let built = self.built.lock().unwrap().pop();
        match built {
            Some(thread) if thread.starts_with("tandem-worker") => {
                Ok(tandem_cloud::Admitted::default())
            }
            other => Err(format!("{} was built on {other:?}", hello.node).into()),
        }
    }

    fn split_step(
        &mut self,
        _node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(tandem_runtime::wire::CutGradient, Vec<u8>), String> {
        Ok(reversed_reply(activations.step, tensor))
    }
}

/// Issue 30 item 9 (split half): an admission that builds a top or reads a snapshot of
/// up to 2 GiB runs on a worker: while it takes its time the hub admits another device
/// and serves its steps, and the slow device is admitted once its work is done.
#[tokio::test]
async fn a_slow_admission_builds_on_a_worker_while_the_hub_serves_others() {
    let (started, starts) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel();
    let app = SlowAdmit {
        started,
        release: Arc::new(Mutex::new(released)),
        built: Arc::default(),
    };
    let cloud = Cloud::start_with_hub("workers-admit", HubSettings::default(), app).await;
    let slow_target = link_target(&cloud, "slow", Capabilities::SPLIT);
    let slow = {
        let endpoint = common::device_endpoint(&cloud, "slow");
        tokio::spawn(async move {
            let policy = tandem_runtime::transport::link::ReconnectPolicy {
                give_up_after: Duration::from_secs(20),
                ..Default::default()
            };
            DeviceLink::connect(endpoint, slow_target, policy).await
        })
    };
    let thread = tokio::task::spawn_blocking(move || starts.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the admission's work started");
    assert!(thread.starts_with("tandem-worker"), "built on {thread}");
    // The hub is free: another device is admitted and served while "slow" builds.
    let mut fast = tokio::time::timeout(Duration::from_secs(5), link(&cloud, "fast"))
        .await
        .expect("admitted while another admission builds");
    let mut machine = split_device();
    tokio::time::timeout(Duration::from_secs(5), step(&mut fast, &mut machine))
        .await
        .expect("served while another admission builds");
    assert!(!slow.is_finished(), "admitted before its work was done");
    release.send(()).unwrap();
    let mut slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("admitted once its work is done")
        .unwrap()
        .expect("admitted");
    let mut machine = split_device();
    step(&mut slow, &mut machine).await;
    fast.close();
    slow.close();
    cloud.shutdown().await;
}
