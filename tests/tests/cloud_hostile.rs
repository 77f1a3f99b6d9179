//! A device cannot hurt the cloud or the other devices over loopback QUIC: kinds the
//! cloud does not serve, or that travel the wrong way, are refused from their frame
//! header; split steps past the shape agreed at Hello are refused before their tensor
//! is read; a tensor over the device's budget is refused; a panic in one device's step
//! refuses that device alone. The honest traffic on the same cloud carries on.

mod common;

use common::{Cloud, link_target, quick_link, reversed_reply};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_cloud::{Admitted, CloudApp, Refused};
use tandem_runtime::session::split::{SplitConfig, SplitDevice};
use tandem_runtime::session::step_limits::StepLimits;
use tandem_runtime::transport::link::{DeviceLink, LinkError};
use tandem_runtime::transport::{self, TransportError, TransportLimits};
use tandem_runtime::wire::{
    Activations, Capabilities, CodecDesc, CutGradient, FrameHeader, Hello, Kind, NodeName,
    encode_frame,
};

/// Width of a token row at the cut, and the step shape every device declares.
const WIDTH: u16 = 16;
const MAX_BATCH: u16 = 2;
const MAX_SEQ: u16 = 4;

/// What the application saw: (node, step) of every step trained, nodes forgotten.
#[derive(Default)]
struct Log {
    steps: Vec<(String, u64)>,
    forgotten: Vec<String>,
}

/// Admits split devices within the shape their Hello declares (as the MiniLM app does),
/// answers each step with its bytes reversed, and panics on any step of `panics_for`.
struct ShapedApp {
    log: Arc<Mutex<Log>>,
    panics_for: &'static str,
}

impl CloudApp for ShapedApp {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT
    }

    fn admit(&mut self, hello: &Hello) -> Result<Admitted, Refused> {
        Ok(Admitted {
            steps: Some(StepLimits::of(hello)),
            ..Admitted::default()
        })
    }

    fn split_step(
        &mut self,
        node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        if node.as_str() == self.panics_for {
            panic!("injected failure on step {}", activations.step);
        }
        self.log
            .lock()
            .unwrap()
            .steps
            .push((node.to_string(), activations.step));
        Ok(reversed_reply(activations.step, tensor))
    }

    fn forget(&mut self, node: &NodeName) {
        self.log.lock().unwrap().forgotten.push(node.to_string());
    }
}

async fn cloud(
    test: &str,
    limits: &TransportLimits,
    panics_for: &'static str,
) -> (Cloud, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let app = ShapedApp {
        log: log.clone(),
        panics_for,
    };
    (Cloud::start_in_temp_dir(test, limits, app).await, log)
}

/// A split link for `name` declaring steps of at most 2 sequences of 4 tokens of 16
/// values; it gives up reconnecting after 2 s.
async fn link(cloud: &Cloud, name: &str) -> DeviceLink {
    let mut target = link_target(cloud, name, Capabilities::SPLIT);
    target.hello.model.hidden = WIDTH;
    target.hello.plan.max_batch = MAX_BATCH;
    target.hello.plan.max_seq = MAX_SEQ;
    quick_link(cloud, target, Duration::from_secs(2)).await
}

/// A step of sequences of `lens` tokens (padded to the longest) with an f32 tensor.
fn step_of(lens: &[u16]) -> (Activations, Vec<u8>) {
    let tokens: usize = lens.iter().map(|&l| usize::from(l)).sum();
    let tensor: Vec<u8> = (0..tokens * usize::from(WIDTH))
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let activations = Activations {
        step: 0,
        train: true,
        batch: lens.len() as u16,
        seq: lens.iter().copied().max().unwrap_or(0),
        hidden: WIDTH,
        seq_lens: lens.iter().copied().collect(),
        labels: lens.iter().map(|_| 1).collect(),
        reviews: Default::default(),
        cached: false,
        codec: CodecDesc::Identity,
        payload_len: tensor.len() as u64,
    };
    (activations, tensor)
}

/// Runs `steps` steps of sequences of `lens` tokens on `link`, checking each reply.
async fn run_steps(link: &mut DeviceLink, machine: &mut SplitDevice, steps: u64, lens: &[u16]) {
    for _ in 0..steps {
        let step = machine.next_step();
        let (activations, tensor) = step_of(lens);
        let expected: Vec<u8> = tensor.iter().rev().copied().collect();
        let (gradient, reply) = link
            .split_step(machine, activations, tensor)
            .await
            .expect("step completes");
        assert_eq!(gradient.step, step);
        assert!(reply == expected, "reply of step {step} differs");
    }
}

fn split_device() -> SplitDevice {
    let config = SplitConfig {
        step_timeout: Duration::from_secs(2),
        ..SplitConfig::default()
    };
    SplitDevice::new(config, 0)
}

/// Opens a stream on `link`'s connection, writes `bytes` and leaves the stream open;
/// returns the code the cloud stopped it with, within 5 s.
async fn stopped_after(link: &DeviceLink, bytes: &[u8]) -> Option<quinn::VarInt> {
    let connection = link.connection().expect("connected").clone();
    let mut send = connection.open_uni().await.unwrap();
    send.write_all(bytes).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), send.stopped())
        .await
        .expect("the cloud stops the stream without waiting for the rest")
        .expect("stream stopped, not the connection lost")
}

#[tokio::test]
async fn unserved_kinds_and_steps_past_the_agreed_shape_are_refused_unread() {
    let (cloud, log) = cloud("hostile-shapes", &TransportLimits::default(), "").await;
    let mut bad = link(&cloud, "bad").await;
    let mut good = link(&cloud, "good").await;
    let refused = Some(transport::STREAM_REFUSED.into());

    // An FL update on a split-only cloud, and a cut gradient (cloud -> device) sent to
    // the cloud: frame headers announcing bodies that never come. Reading a body would
    // wait forever; the cloud refuses from the header.
    for kind in [Kind::Update, Kind::CutGradient] {
        let header = FrameHeader::new(kind, 200).unwrap().to_bytes();
        assert_eq!(stopped_after(&bad, &header).await, refused, "{kind:?}");
    }
    // Steps past the declared shape, their tensors never sent: a batch of 3 (declared
    // 2), a padded length of 5 (declared 4), another width, and a rank-1 low-rank
    // payload announcing 1 KiB where the codec makes a few dozen bytes for 8 tokens (a
    // decode is tokens x width, whatever the payload says).
    let (mut batch, _) = step_of(&[4, 4]);
    batch.batch = 3;
    batch.seq_lens.push(4).unwrap();
    batch.labels.push(1).unwrap();
    let (long, _) = step_of(&[5, 1]);
    let (mut wide, _) = step_of(&[2, 2]);
    wide.hidden = WIDTH + 1;
    let (mut lowrank, _) = step_of(&[4, 4]);
    lowrank.codec = CodecDesc::LowRank {
        rank: 1,
        power_iters: 0,
        factor_bits: 8,
    };
    lowrank.payload_len = 1024;
    for (what, step) in [
        ("batch", batch),
        ("length", long),
        ("width", wide),
        ("payload", lowrank),
    ] {
        let frame = encode_frame(&step).unwrap();
        assert_eq!(stopped_after(&bad, &frame).await, refused, "{what}");
    }

    // The same connection and another device keep training.
    let (mut m_bad, mut m_good) = (split_device(), split_device());
    run_steps(&mut bad, &mut m_bad, 2, &[4, 3]).await;
    run_steps(&mut good, &mut m_good, 2, &[2]).await;
    assert_eq!(bad.stats().reconnects, 0);
    assert_eq!(cloud.stats.refused_streams.load(Ordering::Relaxed), 6);
    let trained = log.lock().unwrap().steps.len();
    assert_eq!(trained, 4, "nothing of a refused stream reached the app");
    bad.close();
    good.close();
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_tensor_over_the_devices_budget_is_refused_and_smaller_ones_pass() {
    // 300 bytes held at once: a step of 4 tokens (256 bytes) fits, one of 7 (448) never
    // can.
    let limits = TransportLimits {
        held_tensor_bytes: 300,
        ..TransportLimits::default()
    };
    let (cloud, log) = cloud("hostile-budget", &limits, "").await;
    let mut device = link(&cloud, "pi").await;
    let (over, tensor) = step_of(&[4, 3]);
    let mut frame = encode_frame(&over).unwrap();
    frame.extend(transport_chunks(&tensor));
    assert_eq!(
        stopped_after(&device, &frame).await,
        Some(transport::STREAM_REFUSED.into())
    );
    let mut machine = split_device();
    run_steps(&mut device, &mut machine, 3, &[4]).await;
    assert_eq!(log.lock().unwrap().steps.len(), 3);
    device.close();
    cloud.shutdown().await;
}

/// `tensor` as the chunk frames that follow its message.
fn transport_chunks(tensor: &[u8]) -> Vec<u8> {
    let mut out = FrameHeader::new(Kind::Chunk, tensor.len())
        .unwrap()
        .to_bytes()
        .to_vec();
    out.extend_from_slice(tensor);
    out
}

#[tokio::test]
async fn a_panic_in_one_devices_step_refuses_it_alone() {
    let (cloud, log) = cloud("hostile-panic", &TransportLimits::default(), "bad").await;
    let mut bad = link(&cloud, "bad").await;
    let mut good = link(&cloud, "good").await;
    let mut m_good = split_device();
    run_steps(&mut good, &mut m_good, 1, &[3]).await;

    let mut m_bad = split_device();
    let (activations, tensor) = step_of(&[2]);
    match bad.split_step(&mut m_bad, activations, tensor).await {
        Err(LinkError::Refused(TransportError::Unserved(reason))) => {
            assert!(reason.contains("injected failure"), "{reason}");
        }
        other => panic!("expected the cloud to refuse the device, got {other:?}"),
    }
    // The cloud dropped what the app held for it, and serves the others as before.
    assert!(log.lock().unwrap().forgotten.contains(&"bad".to_string()));
    run_steps(&mut good, &mut m_good, 3, &[3]).await;
    let steps = log.lock().unwrap().steps.clone();
    let expected: Vec<(String, u64)> = (0..4).map(|s| ("good".to_string(), s)).collect();
    assert_eq!(steps, expected);
    good.close();
    cloud.shutdown().await;
}
