//! Split steps and federated rounds between devices and a cloud over loopback QUIC:
//! resumption after a cut connection, a refused stream that harms nothing else,
//! duplicates and stale rounds counted correctly.

mod common;

use common::{Cloud, link_target, node, quick_link, reversed_reply};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_cloud::{CloudApp, RoundOutcome, RoundQuorum};
use tandem_runtime::session::Envelope;
use tandem_runtime::session::check::probe_activations;
use tandem_runtime::session::fl::{Assignment, RoundClient};
use tandem_runtime::session::split::{SplitConfig, SplitDevice};
use tandem_runtime::transport::link::DeviceLink;
use tandem_runtime::transport::{self, TransportLimits};
use tandem_runtime::wire::{
    Activations, Capabilities, CodecDesc, CutGradient, FrameHeader, Join, Kind, NodeName, Update,
    encode_frame,
};

/// What the test application saw.
#[derive(Default)]
struct Log {
    /// (node, step) of every split step trained.
    steps: Vec<(String, u64)>,
    /// (round, committed, nodes aggregated).
    rounds: Vec<(u64, bool, Vec<String>)>,
}

/// A cloud application whose gradient is the activations' bytes reversed, running
/// `rounds` rounds with this quorum.
struct TestApp {
    log: Arc<Mutex<Log>>,
    quorum: RoundQuorum,
    rounds: u64,
}

impl CloudApp for TestApp {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT.union(Capabilities::FL)
    }

    fn split_step(
        &mut self,
        node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        self.log
            .lock()
            .unwrap()
            .steps
            .push((node.to_string(), activations.step));
        Ok(reversed_reply(activations.step, tensor))
    }

    fn quorum(&self) -> RoundQuorum {
        self.quorum
    }

    fn round_tasks(&mut self, round: u64, participants: &[NodeName]) -> Option<Vec<Assignment>> {
        (round <= self.rounds).then(|| {
            let model = vec![round as u8; 1000];
            let task = common::round_task(round, model.len() as u64);
            Assignment::same_for_all(&task, &model, participants)
        })
    }

    fn round_ended(&mut self, outcome: RoundOutcome) {
        let entry = match outcome {
            RoundOutcome::Committed { round, updates } => (
                round,
                true,
                updates.iter().map(|(n, _, _)| n.to_string()).collect(),
            ),
            RoundOutcome::Aborted { round, .. } => (round, false, vec![]),
            _ => return,
        };
        self.log.lock().unwrap().rounds.push(entry);
    }
}

async fn cloud(test: &str, quorum: RoundQuorum, rounds: u64) -> (Cloud, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let app = TestApp {
        log: log.clone(),
        quorum,
        rounds,
    };
    let cloud = Cloud::start_in_temp_dir(test, &TransportLimits::default(), app).await;
    (cloud, log)
}

async fn link(cloud: &Cloud, name: &str) -> DeviceLink {
    let wants = Capabilities::SPLIT.union(Capabilities::FL);
    quick_link(
        cloud,
        link_target(cloud, name, wants),
        Duration::from_secs(10),
    )
    .await
}

fn activations(tensor: &[u8]) -> Activations {
    Activations {
        payload_len: tensor.len() as u64,
        ..probe_activations()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn split_device() -> SplitDevice {
    let config = SplitConfig {
        step_timeout: Duration::from_secs(2),
        ..SplitConfig::default()
    };
    SplitDevice::new(config, 0)
}

/// Runs `steps` split steps of `len` bytes on `link`, checking every gradient.
async fn run_steps(link: &mut DeviceLink, machine: &mut SplitDevice, steps: u64, len: usize) {
    for _ in 0..steps {
        let tensor = pattern(len, machine.next_step() as u8);
        let expected: Vec<u8> = tensor.iter().rev().copied().collect();
        let step = machine.next_step();
        let (gradient, reply) = link
            .split_step(machine, activations(&tensor), tensor)
            .await
            .expect("step completes");
        assert_eq!(gradient.step, step);
        assert_eq!(gradient.loss, len as f32);
        assert!(reply == expected, "gradient bytes of step {step} differ");
    }
}

const NO_ROUNDS: RoundQuorum = RoundQuorum {
    participants: 1,
    min_updates: 1,
};

#[tokio::test]
async fn split_steps_complete_once_each() {
    let (cloud, log) = cloud("split-ok", NO_ROUNDS, 0).await;
    let mut link = link(&cloud, "pi").await;
    assert!(link.ack().capabilities.contains(Capabilities::SPLIT));
    let mut machine = split_device();
    run_steps(&mut link, &mut machine, 5, 100_000).await;
    let steps = log.lock().unwrap().steps.clone();
    let expected: Vec<(String, u64)> = (0..5).map(|s| ("pi".to_string(), s)).collect();
    assert_eq!(steps, expected);
    assert_eq!(link.stats().reconnects, 0);
    link.close();
    cloud.shutdown().await;
}

#[tokio::test]
async fn connection_cut_mid_transfer_resumes_and_trains_the_step_once() {
    let (cloud, log) = cloud("split-cut", NO_ROUNDS, 0).await;
    let mut link = link(&cloud, "pi").await;
    let mut machine = split_device();
    run_steps(&mut link, &mut machine, 1, 1000).await;

    // Cut the connection once 1 MiB of a 24 MiB step has left the device.
    let connection = link.connection().expect("connected").clone();
    let cutter = tokio::spawn(async move {
        let start = connection.stats().udp_tx.bytes;
        while connection.stats().udp_tx.bytes < start + (1 << 20) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        connection.close(0u32.into(), b"test: cable pulled");
    });
    run_steps(&mut link, &mut machine, 1, 24 << 20).await;
    cutter.await.unwrap();
    assert!(
        link.stats().reconnects >= 1,
        "the cut must have forced a reconnect"
    );
    // Step 1 was cut mid-transfer, resent after the reconnect and trained once.
    let steps = log.lock().unwrap().steps.clone();
    assert_eq!(steps, vec![("pi".to_string(), 0), ("pi".to_string(), 1)]);
    run_steps(&mut link, &mut machine, 2, 1000).await;
    link.close();
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_stream_over_its_cap_is_refused_alone() {
    let (cloud, log) = cloud("split-cap", NO_ROUNDS, 0).await;
    let mut bad = link(&cloud, "bad").await;
    let mut good = link(&cloud, "good").await;

    // Announce a tensor over the Activations cap, then send bytes as if it followed.
    let over = Activations {
        payload_len: 1 << 40,
        ..probe_activations()
    };
    let connection = bad.connection().expect("connected").clone();
    let mut send = connection.open_uni().await.unwrap();
    send.write_all(&encode_frame(&over).unwrap()).await.unwrap();
    let chunk = FrameHeader::new(Kind::Chunk, 1024).unwrap();
    let _ = send.write_all(&chunk.to_bytes()).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), send.stopped())
        .await
        .expect("the cloud stops the stream")
        .expect("stream stopped, not the connection lost");
    assert_eq!(stopped, Some(transport::STREAM_REFUSED.into()));

    // The same connection and another device keep working.
    let (mut m_bad, mut m_good) = (split_device(), split_device());
    run_steps(&mut bad, &mut m_bad, 2, 5000).await;
    run_steps(&mut good, &mut m_good, 2, 5000).await;
    assert_eq!(bad.stats().reconnects, 0);
    assert_eq!(
        cloud
            .stats
            .refused_streams
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        log.lock().unwrap().steps.len(),
        4,
        "nothing of the refused stream trained"
    );
    bad.close();
    good.close();
    cloud.shutdown().await;
}

fn update(round: u64, name: &str) -> (Update, Vec<u8>) {
    let tensor = pattern(500, round as u8);
    let update = Update {
        round,
        node: node(name),
        num_examples: 10,
        train_loss: 0.0,
        codec: CodecDesc::Identity,
        payload_len: tensor.len() as u64,
    };
    (update, tensor)
}

fn join(name: &str) -> Join {
    Join {
        node: node(name),
        num_examples: 10,
        capabilities: Capabilities::FL,
    }
}

/// Waits until the cloud has handed `n` session messages to its hub.
async fn messages_reach(cloud: &Cloud, n: u64) {
    let counter = &cloud.stats.messages;
    for _ in 0..5000 {
        if counter.load(std::sync::atomic::Ordering::Relaxed) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the cloud did not receive {n} messages");
}

#[tokio::test]
async fn replayed_updates_count_once_and_stale_rounds_are_rejected() {
    let quorum = RoundQuorum {
        participants: 2,
        min_updates: 2,
    };
    let (cloud, log) = cloud("fl-dup", quorum, 1).await;
    let mut a = link(&cloud, "a").await;
    let mut b = link(&cloud, "b").await;
    a.join(join("a")).await.unwrap();
    b.join(join("b")).await.unwrap();

    // b trains and reports, then waits for the result.
    let b_connection = b.connection().expect("connected").clone();
    let b_round = tokio::spawn(async move {
        let mut machine = RoundClient::new(Duration::from_secs(5));
        let result = b
            .run_round(&mut machine, |task, model| {
                assert_eq!(model, vec![task.round as u8; 1000]);
                Some(update(task.round, "b"))
            })
            .await;
        b.close();
        result
    });
    messages_reach(&cloud, 3).await; // two Joins, b's update

    // b's update replayed twice, and a stale update from a.
    let (b_update, b_tensor) = update(1, "b");
    for _ in 0..2 {
        let replay = Envelope::Update(b_update.clone(), b_tensor.clone());
        transport::send_envelope(&b_connection, &replay)
            .await
            .unwrap();
    }
    let (stale, stale_tensor) = update(7, "a");
    let a_connection = a.connection().expect("connected").clone();
    transport::send_envelope(&a_connection, &Envelope::Update(stale, stale_tensor))
        .await
        .unwrap();
    messages_reach(&cloud, 6).await;

    // a reports: the round commits with one update per node.
    let mut machine = RoundClient::new(Duration::from_secs(5));
    let result = a
        .run_round(&mut machine, |task, _| Some(update(task.round, "a")))
        .await
        .unwrap()
        .expect("a result before the deadline");
    assert!(result.committed);
    assert_eq!((result.round, result.accepted, result.rejected), (1, 2, 1));
    let b_result = b_round.await.unwrap().unwrap().expect("b's result");
    assert_eq!(b_result, result);
    let rounds = log.lock().unwrap().rounds.clone();
    assert_eq!(
        rounds,
        vec![(1, true, vec!["a".to_string(), "b".to_string()])]
    );
    a.close();
    cloud.shutdown().await;
}
