//! The split attacks of `tandem hostile`, against a cloud serving a shared top: each
//! asks a split session the top serves (all-MiniLM-L6-v2 at the cloud's cut, the
//! cut's hidden states as f32, batches of [`BATCH`] x [`SEQ`] tokens) and abuses it.
//! The cut values are made up, not a bottom's: the cloud cannot tell them apart.

use super::attacks::Verdict;
use super::probe::{Target, describe_close};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tandem_runtime::model::minilm::{BertShape, MODEL_NAME};
use tandem_runtime::session::split::{SplitConfig, SplitDevice};
use tandem_runtime::transport::TransportLimits;
use tandem_runtime::transport::link::{DeviceLink, LinkTarget, ReconnectPolicy};
use tandem_runtime::wire::{
    Activations, Capabilities, CodecDesc, FrameHeader, Kind, ModelDesc, NodeName, RunPlan,
    encode_frame,
};

/// Sequences per step.
const BATCH: u16 = 4;
/// Tokens per sequence.
const SEQ: u16 = 16;

/// How long the cloud may take to close a device that takes none of its replies: its
/// send deadline (60 s, plus a second per 32 KiB of the reply) and some.
const SEND_DEADLINE_WAIT: Duration = Duration::from_secs(120);

/// `node`'s link target: a split Hello of a fresh run at the cloud's cut, identity both
/// ways.
fn split_target(target: &Target, node: &NodeName) -> LinkTarget {
    let mut link_target = LinkTarget::new(
        target.peer,
        &target.server_name,
        node.clone(),
        Capabilities::SPLIT,
    );
    let hello = &mut link_target.hello;
    let mut name = heapless::String::new();
    let _ = name.push_str(MODEL_NAME);
    hello.model = ModelDesc {
        name,
        cut: target.cut,
        hidden: BertShape::MINILM_L6.hidden as u16,
    };
    hello.codecs = [CodecDesc::Identity].into_iter().collect();
    // A new process each time: the cloud takes each session for a restart.
    let process = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    hello.plan = RunPlan {
        steps: 1_000_000,
        warmup: 0,
        run: process,
        process,
        start_step: 0,
        checkpoint_every: 0,
        max_batch: BATCH,
        max_seq: SEQ,
    };
    link_target
}

/// The bytes of one step's tensor (and of its gradient).
fn tensor_bytes() -> usize {
    usize::from(BATCH) * usize::from(SEQ) * BertShape::MINILM_L6.hidden * 4
}

/// Step `step`: made-up cut values of about unit size (a layer norm's output), times
/// `scale`.
fn step(step: u64, scale: f32) -> (Activations, Vec<u8>) {
    let hidden = BertShape::MINILM_L6.hidden;
    let tensor: Vec<u8> = (0..tensor_bytes() / 4)
        .flat_map(|i| (((i as f32) * 0.618).sin() * 1.5 * scale).to_le_bytes())
        .collect();
    let activations = Activations {
        step,
        train: true,
        batch: BATCH,
        seq: SEQ,
        hidden: hidden as u16,
        seq_lens: (0..BATCH).map(|_| SEQ).collect(),
        labels: (0..BATCH).map(|i| u32::from(i % 2 == 1)).collect(),
        reviews: Default::default(),
        cached: false,
        codec: CodecDesc::Identity,
        payload_len: tensor.len() as u64,
    };
    (activations, tensor)
}

/// A split link of attack `attack`'s device, its transport within `limits`.
async fn link(target: &Target, attack: &str, limits: &TransportLimits) -> Result<DeviceLink> {
    let node = target.node(attack)?;
    let endpoint = target.endpoint_limited(&node, limits)?;
    let link_target = split_target(target, &node);
    let policy = ReconnectPolicy {
        give_up_after: Duration::from_millis(1),
        ..ReconnectPolicy::default()
    };
    DeviceLink::connect(endpoint, link_target, policy)
        .await
        .with_context(|| format!("{node} was not admitted to a split session"))
}

/// A device that grants the cloud no streams (so it takes none of its replies) sends a
/// step, then resends it as fast as the cloud reads: the cloud must answer the step
/// once, queue no copy per resend, and close the device once its repeats are past an
/// honest device's (or, failing that, at its send deadline).
pub(super) async fn resend_amplification(target: &Target) -> Result<Verdict> {
    let deaf = TransportLimits {
        max_uni_streams: 0,
        ..TransportLimits::default()
    };
    let link = link(target, "resend-amplification", &deaf).await?;
    let connection = link.connection().context("no connection")?.clone();
    let (activations, tensor) = step(0, 1.0);
    let mut frames = encode_frame(&activations)?;
    frames.extend(FrameHeader::new(Kind::Chunk, tensor.len())?.to_bytes());
    frames.extend(&tensor);
    let started = Instant::now();
    let mut sent = 0u64;
    let resend = async {
        loop {
            let Ok(mut send) = connection.open_uni().await else {
                return;
            };
            if send.write_all(&frames).await.is_err() || send.finish().is_err() {
                return;
            }
            sent += 1;
        }
    };
    let closed = tokio::time::timeout(SEND_DEADLINE_WAIT, async {
        tokio::join!(resend, connection.closed()).1
    })
    .await;
    let mb = (sent * frames.len() as u64) as f64 / (1 << 20) as f64;
    Ok(match closed {
        Ok(err) => {
            let said = describe_close(&err);
            let what = format!(
                "{said} after {:.0} s and {} resends ({mb:.0} MiB) of one step",
                started.elapsed().as_secs_f64(),
                sent.saturating_sub(1)
            );
            // Closed for the repeats, or failing that at the send deadline.
            if said.contains("times over") || said.contains("not taken within") {
                Verdict::Refused(what)
            } else {
                Verdict::NotRefused(format!("closed for another reason: {what}"))
            }
        }
        Err(_) => Verdict::NotRefused(format!(
            "still open after {} s and {} resends ({mb:.0} MiB)",
            SEND_DEADLINE_WAIT.as_secs(),
            sent.saturating_sub(1)
        )),
    })
}

/// A step whose cut values are finite but overflow the shared top (x1e19), then an
/// ordinary step from a new session: the crafted step must get no gradient and leave
/// the top as it was, so the ordinary step's loss is finite.
pub(super) async fn shared_top_overflow(target: &Target) -> Result<Verdict> {
    let config = SplitConfig {
        step_timeout: Duration::from_secs(120),
        ..SplitConfig::default()
    };
    let limits = TransportLimits::default();
    let mut crafted_link = link(target, "shared-top-overflow", &limits).await?;
    let (activations, tensor) = step(0, 1e19);
    let crafted = crafted_link
        .split_step(
            &mut SplitDevice::new(config.clone(), 0),
            activations,
            tensor,
        )
        .await;
    crafted_link.close();
    let refusal = match crafted {
        Err(err) => format!("the step was refused ({err})"),
        Ok((gradient, reply)) if gradient.loss.is_finite() && !reply.is_empty() => {
            return Ok(Verdict::NotRefused(format!(
                "the top trained on it: loss {}, {} gradient bytes back",
                gradient.loss,
                reply.len()
            )));
        }
        Ok((gradient, reply)) => format!(
            "the step got loss {} and {} gradient bytes (not trained on)",
            gradient.loss,
            reply.len()
        ),
    };
    let mut after = link(target, "shared-top-overflow", &limits).await?;
    let (activations, tensor) = step(0, 1.0);
    let ordinary = after
        .split_step(&mut SplitDevice::new(config, 0), activations, tensor)
        .await;
    after.close();
    Ok(match ordinary {
        Ok((gradient, reply)) if gradient.loss.is_finite() && reply.len() == tensor_bytes() => {
            Verdict::Refused(format!(
                "{refusal}; an ordinary step next: loss {:.3}, the top still finite",
                gradient.loss
            ))
        }
        Ok((gradient, reply)) => Verdict::NotRefused(format!(
            "{refusal}, but the top is poisoned: an ordinary step next got loss {} and {} gradient bytes",
            gradient.loss,
            reply.len()
        )),
        Err(err) => Verdict::NotRefused(format!(
            "{refusal}, but an ordinary step next failed: {err}"
        )),
    })
}
