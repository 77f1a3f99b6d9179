//! Federated simulation on real Fashion-MNIST (Debian's copy, installed by
//! `cargo xtask setup`): a few LeNet-5 rounds must learn, reproducibly, and a compressing
//! codec must send fewer bytes through the same code path.
#![cfg(feature = "model")]

mod common;

use tandem_cloud::fl::adapt::{DeviceClass, Profiles, Reason};
use tandem_cloud::fl::record::RoundRecord;
use tandem_cloud::fl::simulate::{Devices, Simulation, SimulationConfig};
use tandem_cloud::fl::strategy::StrategySpec;
use tandem_runtime::data::fashion_mnist::Images;
use tandem_runtime::fl::fmnist::Fmnist;
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::wire::CodecDesc;

fn config(codec: CodecDesc) -> SimulationConfig {
    SimulationConfig {
        per_round: 4,
        local: common::local_sgd(),
        codec,
        strategy: StrategySpec::default(),
        bound: None,
        byzantine: None,
        byzantine_examples: None,
        median_caps: tandem_cloud::fl::round_bounds::MedianCaps::OFF,
        seed: 3,
        workers: 2,
        dp: None,
        eval_every: 1,
        rounds: 1000,
        devices: None,
        secagg: None,
    }
}

fn run(
    clients: &[Images],
    test: &Images,
    codec: CodecDesc,
    rounds: usize,
) -> (f64, Vec<RoundRecord>, Vec<f32>) {
    let task = Fmnist::new(ComputeBackend::Flex);
    let mut sim = Simulation::new(&task, clients, test, config(codec)).unwrap();
    let before = sim.evaluate().unwrap().accuracy;
    let records = (0..rounds).map(|_| sim.run_round().unwrap()).collect();
    (before, records, sim.global().to_vec())
}

#[test]
fn fedavg_learns_reproducibly_and_top_k_sends_less() {
    let Some((clients, test)) = common::fashion_mnist_clients(4, 7) else {
        return;
    };
    let (before, records, global) = run(&clients, &test, CodecDesc::Identity, 3);
    let last = records.last().unwrap().accuracy.unwrap();
    assert!(
        last > 0.45 && last > before + 0.3,
        "accuracy {before} -> {last}"
    );
    assert!(records.iter().all(|r| r.aggregated == 4 && r.refused == 0));
    // Every round's four clients, named once each, in order.
    assert!(records.iter().all(|r| r.contributors.len() == 4
        && r.contributors.windows(2).all(|w| w[0] < w[1])
        && r.contributors.iter().all(|n| n.starts_with("sim-"))));
    // Same seed, same everything: the global model is bit for bit the same.
    let (_, again, global_again) = run(&clients, &test, CodecDesc::Identity, 3);
    assert_eq!(global, global_again);
    let untimed = |rs: &[RoundRecord]| {
        rs.iter()
            .map(|r| RoundRecord {
                seconds: 0.0,
                ..r.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(untimed(&records), untimed(&again));

    let (_, compressed, _) = run(&clients, &test, CodecDesc::TopK { ratio_ppm: 10_000 }, 3);
    let identity_up: u64 = records.iter().map(|r| r.uplink_bytes).sum();
    let topk_up: u64 = compressed.iter().map(|r| r.uplink_bytes).sum();
    // 1% of the large tensors as (gap varint, f32) pairs, the small ones raw.
    assert!(
        identity_up > 20 * topk_up,
        "identity {identity_up} B, top-1% {topk_up} B"
    );
}

#[test]
fn acp_rounds_learn_with_one_factor_up_per_tensor() {
    let Some((clients, test)) = common::fashion_mnist_clients(4, 7) else {
        return;
    };
    let acp = CodecDesc::Acp {
        rank: 4,
        factor_bits: 8,
    };
    let (before, records, _) = run(&clients, &test, acp, 3);
    let last = records.last().unwrap().accuracy.unwrap();
    assert!(last > before + 0.2, "accuracy {before} -> {last}");
    assert!(records.iter().all(|r| r.aggregated == 4 && r.refused == 0));
    // Every round's four clients, named once each, in order.
    assert!(records.iter().all(|r| r.contributors.len() == 4
        && r.contributors.windows(2).all(|w| w[0] < w[1])
        && r.contributors.iter().all(|n| n.starts_with("sim-"))));
    // Per update: the small tensors raw (1,226 f32), one rank-4 int8 factor of each large
    // one (at most 400 x 4 codes for fc1), each tensor behind its 4-byte length; against
    // 61,706 f32 for identity.
    let per_update = records[0].uplink_bytes / 4;
    assert!(
        per_update < 1_226 * 4 + 3 * (400 * 4 + 400 * 4 / 64 * 4 + 4) + 10 * 4 + 200,
        "{per_update} B per update"
    );
    // The shared factors go down with the model: more than the model alone.
    assert!(records[0].downlink_bytes > 4 * 61_706 * 4);
}

/// Central DP through the simulation: every round reports the epsilon the accountant
/// gives for its rounds so far, the run stops before the target, and the noise moves the
/// model (the same seed without noise ends elsewhere).
#[test]
fn dp_rounds_report_the_accountants_epsilon_and_stop_before_the_target() {
    use tandem_cloud::fl::accountant::RdpAccountant;
    use tandem_cloud::fl::central_dp::DpSettings;
    use tandem_cloud::fl::validate::NormBound;
    let Some((clients, test)) = common::fashion_mnist_clients(8, 7) else {
        return;
    };
    let task = Fmnist::new(ComputeBackend::Flex);
    let dp = DpSettings {
        noise_multiplier: 2.0,
        delta: 1e-5,
        target_epsilon: Some(3.0),
    };
    let clipped = SimulationConfig {
        bound: Some(NormBound::Clip(1.0)),
        ..config(CodecDesc::Identity)
    };
    let mut sim = Simulation::new(
        &task,
        &clients,
        &test,
        SimulationConfig {
            dp: Some(dp),
            ..clipped.clone()
        },
    )
    .unwrap();
    let mut records = Vec::new();
    while !sim.privacy_exhausted() {
        records.push(sim.run_round().unwrap());
        assert!(records.len() < 100, "never reached the target");
    }
    // 4 of 8 clients a round: q = 0.5.
    let mut accountant = RdpAccountant::new();
    for r in &records {
        accountant.compose(0.5, 2.0, 1);
        assert_eq!(r.epsilon, Some(accountant.epsilon(1e-5).0));
        // Every valid update counts, though the strategy saw their noised mean alone.
        assert!(r.aggregated >= 2, "{r:?}");
        assert_eq!(r.aggregated, r.contributors.len());
    }
    let spent = records.last().unwrap().epsilon.unwrap();
    assert!(spent <= 3.0, "{spent}");
    accountant.compose(0.5, 2.0, 1);
    assert!(accountant.epsilon(1e-5).0 > 3.0);

    let mut plain = Simulation::new(&task, &clients, &test, clipped).unwrap();
    for _ in &records {
        plain.run_round().unwrap();
    }
    assert_ne!(plain.global(), sim.global());
}

/// Half the devices fast, half with 4x slower steps and a 25x thinner uplink (an f32
/// LeNet update takes them 0.62 s, after 1.28 s of training); rounds of 1 s.
fn two_speeds(adapt: bool) -> Devices {
    let class = |name: &str, step_ms, uplink_kb_per_s| DeviceClass {
        name: name.into(),
        share: 1.0,
        step_ms,
        uplink_kb_per_s,
    };
    Devices {
        profiles: Profiles {
            classes: vec![class("fast", 10.0, 10_000.0), class("slow", 40.0, 400.0)],
        },
        deadline_s: 1.0,
        adapt,
    }
}

#[test]
fn adapting_devices_report_in_time_where_fixed_ones_straggle() {
    let Some((clients, test)) = common::fashion_mnist_clients(8, 7) else {
        return;
    };
    let task = Fmnist::new(ComputeBackend::Flex);
    let rounds = |adapt: bool| {
        let config = SimulationConfig {
            per_round: 4,
            devices: Some(two_speeds(adapt)),
            eval_every: 4,
            ..config(CodecDesc::Identity)
        };
        let mut sim = Simulation::new(&task, &clients, &test, config).unwrap();
        (0..4).map(|_| sim.run_round().unwrap()).collect::<Vec<_>>()
    };
    let fixed = rounds(false);
    for r in &fixed {
        let slow = r.plans.iter().filter(|p| p.class == "slow").count();
        assert!(
            r.plans
                .iter()
                .all(|p| (p.class == "slow") == (p.reason == Reason::Straggler))
        );
        assert_eq!((r.dropped, r.aggregated), (slow, 4 - slow), "{r:?}");
    }
    let adapted = rounds(true);
    for r in &adapted {
        assert_eq!((r.dropped, r.aggregated), (0, 4), "{r:?}");
        assert!(r.simulated_seconds.unwrap() <= 1.0);
        for p in &r.plans {
            if p.class == "fast" {
                assert_eq!(
                    (p.reason, p.codec, p.steps),
                    (Reason::Fits, CodecDesc::Identity, 32)
                );
            } else {
                // f16 (123 KB) leaves 14 of the 32 steps (two epochs of 16 batches); int8
                // (62 KB + scales, 0.16 s) the first half or more: 18.
                assert_eq!(p.reason, Reason::FewerSteps, "{p:?}");
                assert_eq!((p.codec, p.steps), (CodecDesc::Int8 { block: 64 }, 18));
            }
        }
    }
    // Some slow device was sampled, and the adapted rounds heard from it.
    assert!(fixed.iter().any(|r| r.dropped > 0));
    // And the model learns from the mixed updates (10% is chance; 64% with every device
    // fast, 55% here when measured).
    let accuracy = adapted.last().unwrap().accuracy.unwrap();
    assert!(accuracy > 0.45, "{accuracy}");
}

#[test]
fn a_secure_round_gives_the_plain_mean_and_opens_without_a_dropped_device() {
    let Some((clients, test)) = common::fashion_mnist_clients(8, 7) else {
        return;
    };
    let task = Fmnist::new(ComputeBackend::Flex);
    let run = |secagg: Option<&str>| {
        let config = SimulationConfig {
            secagg: secagg.map(|s| s.parse().unwrap()),
            eval_every: 2,
            ..config(CodecDesc::Identity)
        };
        let mut sim = Simulation::new(&task, &clients, &test, config).unwrap();
        let record = sim.run_round().unwrap();
        (record, sim.global().to_vec())
    };
    // Equal slices: FedAvg's weighted mean is the plain mean the secure sum gives.
    let (plain, plain_global) = run(None);
    let (secure, secure_global) = run(Some("bits=16,clip=1"));
    assert_eq!(secure.aggregated, 4);
    let gap = plain_global
        .iter()
        .zip(&secure_global)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // Four values rounded to 1/32767 each, over four.
    assert!(gap < 1e-4, "largest difference {gap}");
    // 16-bit values plus 2 bits of headroom: 3 bytes a value, under f32's 4.
    assert!(secure.uplink_bytes < plain.uplink_bytes, "{secure:?}");
    // One of the four vanishes after sharing: the other three still open.
    let (dropped, _) = run(Some("bits=16,clip=1,drop=0.25"));
    assert_eq!((dropped.aggregated, dropped.dropped), (3, 1));
    assert_eq!(dropped.contributors.len(), 3);
}
