//! Arbitrary operation sequences against the split and round machines (proptest, in the
//! spirit of quinn's `fuzz_targets/streams.rs`): whatever the order of sends, losses,
//! duplicates, reorders, timeouts and reconnects, nothing panics, no step is trained
//! twice, no gradient is delivered twice, and no update is aggregated twice.

use super::Envelope;
use super::fl::{CoordinatorEvent, RoundCoordinator};
use super::split::{CloudEvent, DeviceEvent, SplitCloud, SplitConfig, SplitDevice};
use crate::wire::{CodecDesc, CutGradient, ModelPayload, NodeName, RoundConfig, RoundTask, Update};
use proptest::prelude::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
enum SplitOp {
    /// The device starts a step (refused if one is in flight).
    Send,
    /// Deliver the oldest message in one direction.
    Deliver { to_cloud: bool },
    /// Deliver the newest message in one direction (reordering).
    DeliverNewest { to_cloud: bool },
    /// Lose the oldest message in one direction.
    Drop { to_cloud: bool },
    /// Deliver the oldest message twice.
    Duplicate { to_cloud: bool },
    /// The cloud application answers its pending step.
    Answer,
    /// Advance the clock.
    Wait { ms: u16 },
    /// The connection comes back.
    Reconnect,
}

fn split_op() -> impl Strategy<Value = SplitOp> {
    prop_oneof![
        3 => Just(SplitOp::Send),
        4 => any::<bool>().prop_map(|to_cloud| SplitOp::Deliver { to_cloud }),
        1 => any::<bool>().prop_map(|to_cloud| SplitOp::DeliverNewest { to_cloud }),
        1 => any::<bool>().prop_map(|to_cloud| SplitOp::Drop { to_cloud }),
        1 => any::<bool>().prop_map(|to_cloud| SplitOp::Duplicate { to_cloud }),
        3 => Just(SplitOp::Answer),
        2 => (0u16..3000).prop_map(|ms| SplitOp::Wait { ms }),
        1 => Just(SplitOp::Reconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn split_machines_never_train_or_deliver_twice(ops in proptest::collection::vec(split_op(), 0..200)) {
        let mut now = Instant::now();
        let config = SplitConfig { step_timeout: Duration::from_millis(500), backoff: 2.0, max_retries: 3 };
        let mut device = SplitDevice::new(config, 0);
        let mut cloud = SplitCloud::new();
        let (mut to_cloud, mut to_device): (Vec<Envelope>, Vec<Envelope>) = (Vec::new(), Vec::new());
        let mut trained = HashSet::new();
        let mut delivered = HashSet::new();
        let mut pending_answer: Option<u64> = None;
        for op in ops {
            match op {
                SplitOp::Send => {
                    let _ = device.send_step(now, super::harness::Pair::activations(1), vec![1, 2]);
                }
                SplitOp::Deliver { to_cloud: up } | SplitOp::Duplicate { to_cloud: up }
                | SplitOp::DeliverNewest { to_cloud: up } | SplitOp::Drop { to_cloud: up } => {
                    let queue = if up { &mut to_cloud } else { &mut to_device };
                    if queue.is_empty() {
                        continue;
                    }
                    let envelope = match op {
                        SplitOp::DeliverNewest { .. } => queue.pop().expect("non-empty"),
                        SplitOp::Duplicate { .. } => queue[0].clone(),
                        _ => queue.remove(0),
                    };
                    if matches!(op, SplitOp::Drop { .. }) {
                        continue;
                    }
                    if up { cloud.handle_message(now, envelope) } else { device.handle_message(now, envelope) }
                }
                SplitOp::Answer => {
                    if let Some(step) = pending_answer.take() {
                        let g = CutGradient { step, loss: 0.0, codec: CodecDesc::Identity, payload_len: 1 };
                        prop_assert!(cloud.send_gradient(now, g, vec![7]).is_ok());
                    }
                }
                SplitOp::Wait { ms } => {
                    now += Duration::from_millis(u64::from(ms));
                    device.handle_timeout(now);
                }
                SplitOp::Reconnect => device.handle_reconnect(now),
            }
            while let Some(e) = device.poll_transmit() { to_cloud.push(e); }
            while let Some(e) = cloud.poll_transmit() { to_device.push(e); }
            while let Some(CloudEvent::Activations { activations, .. }) = cloud.poll_event() {
                prop_assert!(trained.insert(activations.step), "step {} trained twice", activations.step);
                // A newer step supersedes a pending one (the device gave that one up):
                // answering the superseded step is refused.
                if let Some(old) = pending_answer.replace(activations.step) {
                    prop_assert!(old < activations.step);
                    let g = CutGradient { step: old, loss: 0.0, codec: CodecDesc::Identity, payload_len: 1 };
                    prop_assert!(cloud.send_gradient(now, g, vec![7]).is_err());
                }
            }
            while let Some(event) = device.poll_event() {
                if let DeviceEvent::Gradient { gradient, .. } = event {
                    prop_assert!(delivered.insert(gradient.step), "gradient {} delivered twice", gradient.step);
                    prop_assert!(trained.contains(&gradient.step), "gradient for an untrained step");
                }
            }
        }
    }

    #[test]
    fn round_coordinator_aggregates_each_node_at_most_once(
        updates in proptest::collection::vec((0u8..5, 0u8..5, 0u64..3, 0u16..4000), 0..60),
    ) {
        let now = Instant::now();
        let node = |i: u8| NodeName::try_from(format!("n{i}").as_str()).expect("short");
        let participants: Vec<NodeName> = (0..3).map(node).collect();
        let task = RoundTask {
            round: 1,
            deadline_ms: 3000,
            config: RoundConfig { local_epochs: 1, batch_size: 1, lr: 0.1, proximal_mu: 0.0 },
            model: ModelPayload::Full,
            codec: CodecDesc::Identity,
            payload_len: 0,
        };
        let mut c = RoundCoordinator::start(now, task, vec![], participants, 2);
        let mut committed = Vec::new();
        for (from, claims, round, at) in updates {
            let t = now + Duration::from_millis(u64::from(at));
            c.handle_timeout(t);
            let u = Update { round, node: node(claims), num_examples: 1, codec: CodecDesc::Identity, payload_len: 0 };
            c.handle_message(t, &node(from), Envelope::Update(u, vec![]));
            while let Some(e) = c.poll_event() {
                if let CoordinatorEvent::Committed { updates, .. } = e {
                    committed.push(updates);
                }
            }
        }
        prop_assert!(committed.len() <= 1, "committed twice");
        if let Some(updates) = committed.first() {
            let nodes: HashSet<&NodeName> = updates.iter().map(|(n, _, _)| n).collect();
            prop_assert_eq!(nodes.len(), updates.len(), "a node aggregated twice");
            prop_assert!(updates.iter().all(|(n, u, _)| &u.node == n && u.round == 1));
            prop_assert!(updates.len() >= 2);
        }
    }
}
