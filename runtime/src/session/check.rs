//! Operation-sequence checkers for the session machines, shared by the proptest suite
//! and the cargo-fuzz targets in `fuzz/` (after quinn's `fuzz_targets/streams.rs`).
//!
//! Each checker drives the real machines through an arbitrary sequence of sends, losses,
//! duplicates, reorders, timeouts and reconnects and returns the first broken invariant:
//! a step trained twice, a gradient delivered twice or for an untrained step, an update
//! aggregated twice. Any panic inside is a bug as well.

use super::Envelope;
use super::fl::{CoordinatorEvent, RoundCoordinator};
use super::split::{CloudEvent, DeviceEvent, SplitCloud, SplitConfig, SplitDevice};
use crate::wire::{
    Activations, CodecDesc, CutGradient, ModelPayload, NodeName, RoundConfig, RoundTask, Update,
};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One thing that can happen to a device/cloud split pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitOp {
    /// The device starts a step (refused if one is in flight).
    Send,
    /// Deliver the oldest message in one direction.
    Deliver {
        /// Towards the cloud (else towards the device).
        to_cloud: bool,
    },
    /// Deliver the newest message in one direction (reordering).
    DeliverNewest {
        /// Towards the cloud.
        to_cloud: bool,
    },
    /// Lose the oldest message in one direction.
    Drop {
        /// Towards the cloud.
        to_cloud: bool,
    },
    /// Deliver the oldest message and keep a copy queued (duplication).
    Duplicate {
        /// Towards the cloud.
        to_cloud: bool,
    },
    /// The cloud application answers its pending step.
    Answer,
    /// Advance the clock.
    Wait {
        /// Milliseconds.
        ms: u16,
    },
    /// The connection comes back.
    Reconnect,
}

impl SplitOp {
    /// Decodes fuzzer bytes into operations, three bytes per operation.
    pub fn from_bytes(bytes: &[u8]) -> Vec<SplitOp> {
        bytes
            .chunks_exact(3)
            .map(|b| {
                let to_cloud = b[1] & 1 == 1;
                match b[0] % 8 {
                    0 => SplitOp::Send,
                    1 => SplitOp::Deliver { to_cloud },
                    2 => SplitOp::DeliverNewest { to_cloud },
                    3 => SplitOp::Drop { to_cloud },
                    4 => SplitOp::Duplicate { to_cloud },
                    5 => SplitOp::Answer,
                    6 => SplitOp::Wait {
                        ms: u16::from_le_bytes([b[1], b[2]]) % 3000,
                    },
                    _ => SplitOp::Reconnect,
                }
            })
            .collect()
    }
}

/// An activations message with no tensor, for checks and tests.
pub fn probe_activations() -> Activations {
    Activations {
        step: 0,
        train: true,
        batch: 1,
        seq: 1,
        hidden: 4,
        seq_lens: heapless::Vec::new(),
        labels: heapless::Vec::new(),
        reviews: heapless::Vec::new(),
        cached: false,
        codec: CodecDesc::Identity,
        payload_len: 0,
    }
}

fn gradient(step: u64) -> CutGradient {
    CutGradient {
        step,
        loss: 0.0,
        kept: false,
        codec: CodecDesc::Identity,
        payload_len: 1,
    }
}

/// Runs `ops` against a [`SplitDevice`]/[`SplitCloud`] pair. `Err` names the broken
/// invariant.
pub fn check_split(ops: &[SplitOp]) -> Result<(), String> {
    let mut now = Instant::now();
    let config = SplitConfig {
        step_timeout: Duration::from_millis(500),
        backoff: 2.0,
        max_retries: 3,
    };
    let mut device = SplitDevice::new(config, 0);
    let mut cloud = SplitCloud::new();
    let (mut to_cloud, mut to_device): (Vec<Envelope>, Vec<Envelope>) = (Vec::new(), Vec::new());
    let mut trained = HashSet::new();
    let mut delivered = HashSet::new();
    let mut pending_answer: Option<u64> = None;
    for &op in ops {
        match op {
            SplitOp::Send => {
                let _ = device.send_step(now, probe_activations(), vec![1, 2]);
            }
            SplitOp::Deliver { to_cloud: up }
            | SplitOp::Duplicate { to_cloud: up }
            | SplitOp::DeliverNewest { to_cloud: up }
            | SplitOp::Drop { to_cloud: up } => {
                let queue = if up { &mut to_cloud } else { &mut to_device };
                let envelope = match op {
                    SplitOp::DeliverNewest { .. } => queue.pop(),
                    SplitOp::Duplicate { .. } => queue.first().cloned(),
                    _ if queue.is_empty() => None,
                    _ => Some(queue.remove(0)),
                };
                match envelope {
                    Some(_) if matches!(op, SplitOp::Drop { .. }) => {}
                    Some(e) if up => cloud.handle_message(now, e),
                    Some(e) => device.handle_message(now, e),
                    None => {}
                }
            }
            SplitOp::Answer => {
                if let Some(step) = pending_answer.take()
                    && cloud.send_gradient(now, gradient(step), vec![7]).is_err()
                {
                    return Err(format!("answer to pending step {step} refused"));
                }
            }
            SplitOp::Wait { ms } => {
                now += Duration::from_millis(u64::from(ms));
                device.handle_timeout(now);
            }
            SplitOp::Reconnect => device.handle_reconnect(now),
        }
        to_cloud.extend(std::iter::from_fn(|| device.poll_transmit()));
        to_device.extend(std::iter::from_fn(|| cloud.poll_transmit()));
        while let Some(CloudEvent::Activations { activations, .. }) = cloud.poll_event() {
            let step = activations.step;
            if !trained.insert(step) {
                return Err(format!("step {step} trained twice"));
            }
            // A newer step supersedes a pending one (the device gave that one up):
            // answering the superseded step is refused.
            if let Some(old) = pending_answer.replace(step) {
                if old >= step {
                    return Err(format!("step {step} handed out after step {old}"));
                }
                if cloud.send_gradient(now, gradient(old), vec![7]).is_ok() {
                    return Err(format!("superseded step {old} was answered"));
                }
            }
        }
        while let Some(event) = device.poll_event() {
            if let DeviceEvent::Gradient { gradient, .. } = event {
                let step = gradient.step;
                if !delivered.insert(step) {
                    return Err(format!("gradient {step} delivered twice"));
                }
                if !trained.contains(&step) {
                    return Err(format!("gradient {step} for an untrained step"));
                }
            }
        }
    }
    Ok(())
}

/// One update arriving at a round coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateOp {
    /// The authenticated sender (`n0`..`n4`; `n0`..`n2` participate).
    pub from: u8,
    /// The node the update claims to be from.
    pub claims: u8,
    /// Its round (the round under test is 1).
    pub round: u64,
    /// Milliseconds after the round started (the deadline is 3000).
    pub at_ms: u16,
}

impl UpdateOp {
    /// Decodes fuzzer bytes into updates, four bytes per update.
    pub fn from_bytes(bytes: &[u8]) -> Vec<UpdateOp> {
        bytes
            .chunks_exact(4)
            .map(|b| UpdateOp {
                from: b[0] % 5,
                claims: b[1] % 5,
                round: u64::from(b[2] % 3),
                at_ms: u16::from(b[3]) * 16,
            })
            .collect()
    }
}

/// Feeds `updates` (in order; times are clamped to never go backwards) to a coordinator
/// of round 1 with participants `n0`..`n2` needing 2 updates. `Err` names the broken
/// invariant: a second commit, a node aggregated twice, a foreign or stale update
/// aggregated, or a commit with too few updates.
pub fn check_round(updates: &[UpdateOp]) -> Result<(), String> {
    let start = Instant::now();
    let node = |i: u8| NodeName::try_from(format!("n{i}").as_str()).expect("short name");
    let participants: Vec<NodeName> = (0..3).map(node).collect();
    let task = RoundTask {
        round: 1,
        deadline_ms: 3000,
        config: RoundConfig {
            local_epochs: 1,
            batch_size: 1,
            lr: 0.1,
            proximal_mu: 0.0,
        },
        model: ModelPayload::Full,
        model_codec: CodecDesc::Identity,
        update_codec: CodecDesc::Identity,
        payload_len: 0,
        factors_len: 0,
    };
    let mut coordinator = RoundCoordinator::start(start, task, vec![], participants, 2);
    let mut commits = 0;
    let mut now = start;
    for op in updates {
        now = now.max(start + Duration::from_millis(u64::from(op.at_ms)));
        coordinator.handle_timeout(now);
        let update = Update {
            round: op.round,
            node: node(op.claims),
            num_examples: 1,
            train_loss: 0.0,
            codec: CodecDesc::Identity,
            payload_len: 0,
        };
        coordinator.handle_message(now, &node(op.from), Envelope::Update(update, vec![]));
        while let Some(event) = coordinator.poll_event() {
            let CoordinatorEvent::Committed { updates, .. } = event else {
                continue;
            };
            commits += 1;
            if commits > 1 {
                return Err("the round committed twice".into());
            }
            let nodes: HashSet<&NodeName> = updates.iter().map(|(n, _, _)| n).collect();
            if nodes.len() != updates.len() {
                return Err("a node was aggregated twice".into());
            }
            if !updates.iter().all(|(n, u, _)| &u.node == n && u.round == 1) {
                return Err("a spoofed or stale update was aggregated".into());
            }
            if updates.len() < 2 {
                return Err(format!("committed with {} updates", updates.len()));
            }
        }
    }
    Ok(())
}
