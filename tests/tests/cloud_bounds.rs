//! What one admitted device can make the cloud hold (issue 30): an update larger than
//! the model's bound is refused before it is read; a device that stops taking what the
//! cloud sends is closed by the send deadline, not buffered; a stream never finished is
//! refused at its deadline; connections that never say Hello are capped by a count.
//! Honest traffic on the same cloud carries on.

mod common;

use common::{Cloud, link_target, quick_link, reversed_reply};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tandem_cloud::{Admitted, CloudApp, OutboxLimits, Refused};
use tandem_runtime::transport::link::{DeviceLink, ReconnectPolicy};
use tandem_runtime::transport::{self, TransportLimits, tls};
use tandem_runtime::wire::{
    Activations, Capabilities, CodecDesc, CutGradient, FrameHeader, Hello, Kind, NodeName, Update,
    encode_frame,
};

/// Serves split steps (bytes reversed) and FL updates of at most `UPDATE_BYTES`.
struct BoundedApp;

const UPDATE_BYTES: u64 = 64;

impl CloudApp for BoundedApp {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SPLIT.union(Capabilities::FL)
    }

    fn admit(&mut self, _hello: &Hello) -> Result<Admitted, Refused> {
        Ok(Admitted {
            steps: None,
            update_bytes: Some(UPDATE_BYTES),
        })
    }

    fn split_step(
        &mut self,
        _node: &NodeName,
        activations: &Activations,
        tensor: &[u8],
    ) -> Result<(CutGradient, Vec<u8>), String> {
        Ok(reversed_reply(activations.step, tensor))
    }
}

/// A split step of one token `bytes` wide (identity codec).
fn activations(step: u64, bytes: usize) -> Activations {
    Activations {
        step,
        train: true,
        batch: 1,
        seq: 1,
        hidden: 1,
        seq_lens: [1].into_iter().collect(),
        labels: [0].into_iter().collect(),
        reviews: Default::default(),
        cached: false,
        codec: CodecDesc::Identity,
        payload_len: bytes as u64,
    }
}

/// A split step of `bytes` tensor bytes, as its frames.
fn step_frames(step: u64, bytes: usize) -> Vec<u8> {
    let mut frames = encode_frame(&activations(step, bytes)).unwrap();
    frames.extend(FrameHeader::new(Kind::Chunk, bytes).unwrap().to_bytes());
    frames.extend(std::iter::repeat_n(7u8, bytes));
    frames
}

/// Writes `frames` on a new stream of `link` and finishes it.
async fn send_stream(link: &DeviceLink, frames: &[u8]) -> quinn::SendStream {
    let connection = link.connection().expect("connected").clone();
    let mut send = connection.open_uni().await.unwrap();
    send.write_all(frames).await.unwrap();
    send.finish().unwrap();
    send
}

fn update(node: &str, payload_len: u64) -> Vec<u8> {
    encode_frame(&Update {
        round: 1,
        node: NodeName::try_from(node).unwrap(),
        num_examples: 10,
        train_loss: 0.5,
        codec: CodecDesc::Identity,
        payload_len,
    })
    .unwrap()
}

#[tokio::test]
async fn an_update_over_the_models_bound_is_refused_before_its_tensor() {
    let cloud =
        Cloud::start_in_temp_dir("bounds-update", &TransportLimits::default(), BoundedApp).await;
    let mut device = quick_link(
        &cloud,
        link_target(&cloud, "pi", Capabilities::FL),
        Duration::from_secs(2),
    )
    .await;
    // 1 MiB announced against a bound of 64 bytes: its tensor is never sent, and the
    // cloud refuses the stream from the message (reading it would wait forever).
    let connection = device.connection().unwrap().clone();
    let mut send = connection.open_uni().await.unwrap();
    send.write_all(&update("pi", 1 << 20)).await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), send.stopped())
        .await
        .expect("refused without its tensor")
        .expect("the stream stopped, not the connection");
    assert_eq!(stopped, Some(transport::STREAM_REFUSED.into()));
    // One within the bound is read and handed on.
    let before = cloud.stats.messages.load(Ordering::Relaxed);
    let mut within = update("pi", 32);
    within.extend(FrameHeader::new(Kind::Chunk, 32).unwrap().to_bytes());
    within.extend([0u8; 32]);
    send_stream(&device, &within).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cloud.stats.messages.load(Ordering::Relaxed) == before {
        assert!(
            Instant::now() < deadline,
            "the update within the bound was not read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cloud.stats.refused_streams.load(Ordering::Relaxed), 1);
    device.close();
    cloud.shutdown().await;
}

/// A device that grants the cloud no streams cannot take its replies: the cloud closes
/// it at the send deadline instead of queueing reply after reply for it.
#[tokio::test]
async fn a_device_that_takes_nothing_is_closed_at_the_send_deadline() {
    let outbox = OutboxLimits {
        send_deadline: Duration::from_secs(1),
        ..OutboxLimits::default()
    };
    let cloud = Cloud::start_with_outbox(
        "bounds-stalled",
        &TransportLimits::default(),
        outbox,
        BoundedApp,
    )
    .await;
    let deaf = TransportLimits {
        max_uni_streams: 0,
        ..TransportLimits::default()
    };
    let config = tls::client_config(&cloud.pki.ca_cert(), cloud.device("deaf"), &deaf).unwrap();
    let endpoint = transport::client_endpoint(cloud.addr, config).unwrap();
    let policy = ReconnectPolicy {
        give_up_after: Duration::from_millis(1),
        ..ReconnectPolicy::default()
    };
    let device = DeviceLink::connect(
        endpoint,
        link_target(&cloud, "deaf", Capabilities::SPLIT),
        policy,
    )
    .await
    .expect("link up");
    let connection = device.connection().unwrap().clone();
    for step in 0..3 {
        send_stream(&device, &step_frames(step, 1 << 16)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("closed by the send deadline");
    let said = closed.to_string();
    // One second, plus a second per 32 KiB of the 64 KiB reply.
    assert!(said.contains("not taken within 3 s"), "{said}");
    // An honest device on the same cloud is served.
    let mut honest = quick_link(
        &cloud,
        link_target(&cloud, "honest", Capabilities::SPLIT),
        Duration::from_secs(2),
    )
    .await;
    let mut machine = tandem_runtime::session::split::SplitDevice::new(Default::default(), 0);
    let (gradient, reply) = honest
        .split_step(&mut machine, activations(0, 64), vec![7u8; 64])
        .await
        .expect("served");
    assert_eq!((gradient.step, reply.len()), (0, 64));
    honest.close();
    cloud.shutdown().await;
}

/// A stream opened and fed a byte a second is refused at the stream deadline, with the
/// seconds, not held open for as long as the device likes.
#[tokio::test]
async fn a_stream_never_finished_is_refused_at_its_deadline() {
    let limits = TransportLimits {
        stream_deadline: Duration::from_secs(1),
        ..TransportLimits::default()
    };
    let cloud = Cloud::start_in_temp_dir("bounds-slowloris", &limits, BoundedApp).await;
    let mut device = quick_link(
        &cloud,
        link_target(&cloud, "slow", Capabilities::SPLIT),
        Duration::from_secs(2),
    )
    .await;
    let connection = device.connection().unwrap().clone();
    let mut send = connection.open_uni().await.unwrap();
    let frames = step_frames(0, 64);
    let started = Instant::now();
    let stopped = async {
        for byte in &frames {
            if send.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        send.stopped().await
    };
    let stopped = tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("refused at the deadline")
        .expect("stopped, not the connection lost");
    assert_eq!(stopped, Some(transport::STREAM_REFUSED.into()));
    assert!(started.elapsed() < Duration::from_secs(5));
    device.close();
    cloud.shutdown().await;
}

/// Admitted connections that never send a Hello hold a slot each until the Hello
/// timeout: past the cap the cloud closes new ones at once.
#[tokio::test]
async fn handshakes_pending_past_the_cap_are_refused_at_once() {
    let limits = TransportLimits {
        max_pending_hellos: 2,
        ..TransportLimits::default()
    };
    let cloud = Cloud::start_in_temp_dir("bounds-pending", &limits, BoundedApp).await;
    let mut silent = Vec::new();
    for i in 0..2 {
        let endpoint = common::device_endpoint(&cloud, &format!("silent-{i}"));
        let connection = endpoint
            .connect(cloud.addr, transport::DEFAULT_SERVER_NAME)
            .unwrap()
            .await
            .expect("handshake");
        silent.push((endpoint, connection));
    }
    let endpoint = common::device_endpoint(&cloud, "one-too-many");
    let started = Instant::now();
    let refused = async {
        let connection = endpoint
            .connect(cloud.addr, transport::DEFAULT_SERVER_NAME)
            .unwrap()
            .await?;
        Ok::<_, quinn::ConnectionError>(connection.closed().await)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("refused well before the 10 s Hello timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "{outcome:?}");
    drop(silent);
    cloud.shutdown().await;
}
