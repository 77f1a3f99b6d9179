//! The federated app's rounds, driven directly (no network): sampling, tasks, commits,
//! the downlink views, central DP, the state lock, aborted rounds, Join inflation.

use super::*;
use tandem_runtime::data::fashion_mnist::Images;
use tandem_runtime::fl::downlink;
use tandem_runtime::fl::fmnist::Fmnist;
use tandem_runtime::fl::update::{self, UpdateEncoder};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::wire::{ModelPayload, Update};

fn app(dir: &str, per_round: usize) -> FlApp<Fmnist> {
    let state_dir = std::env::temp_dir().join(format!("tandem-flapp-{dir}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let settings = FlSettings {
        rounds: 5,
        per_round,
        min_updates: per_round,
        deadline: Duration::from_secs(60),
        local: LocalConfig {
            epochs: 1,
            batch: 32,
            lr: 0.05,
            momentum: 0.9,
            proximal_mu: 0.0,
            max_steps: None,
        },
        codec: CodecDesc::Identity,
        downlink: CodecDesc::Identity,
        strategy: StrategySpec::default(),
        bound: None,
        dp: None,
        seed: 7,
        state_dir,
        max_examples: super::super::validate::MAX_EXAMPLES,
        median_caps: MedianCaps::NETWORK,
        max_aborted: 10,
    };
    FlApp::new(
        Fmnist::new(ComputeBackend::Flex),
        Images::default(),
        settings,
    )
    .unwrap()
}

fn nodes(n: usize) -> Vec<NodeName> {
    (0..n)
        .map(|i| NodeName::try_from(format!("dev-{i:02}").as_str()).unwrap())
        .collect()
}

#[test]
fn participants_are_a_seeded_sample_of_the_available_devices() {
    let available = nodes(10);
    let mut a = app("sample-a", 3);
    let picked = a.participants(&available);
    assert_eq!(picked.len(), 3);
    assert!(
        picked.windows(2).all(|w| w[0] < w[1]),
        "sorted and distinct"
    );
    assert!(picked.iter().all(|p| available.contains(p)));
    // The same seed and round pick the same devices; a round's pick is not always
    // the first devices in name order.
    assert_eq!(app("sample-b", 3).participants(&available), picked);
    let firsts = (0..20)
        .filter(|&seed| {
            let mut app = app(&format!("sample-seed-{seed}"), 3);
            app.core().settings.seed = seed;
            app.participants(&available) == available[..3]
        })
        .count();
    assert!(firsts < 20);
    // Fewer devices than a round wants: all of them.
    assert_eq!(a.participants(&available[..2]), available[..2]);
}

#[test]
fn round_tasks_carry_the_settings_and_stop_after_the_last_round() {
    let mut app = app("tasks", 2);
    let devices = nodes(2);
    let tasks = app.round_tasks(1, &devices).unwrap();
    assert_eq!(tasks.len(), 2);
    let Assignment { to, task, model } = &tasks[0];
    assert_eq!(to, &devices[0]);
    assert_eq!(task.round, 1);
    assert_eq!(task.payload_len as usize, model.len());
    assert_eq!(task.model, ModelPayload::Full);
    assert_eq!((task.config.local_epochs, task.config.batch_size), (1, 32));
    // The model is the app's global, identity-coded in the task's layout.
    let decoded =
        tandem_runtime::fl::update::decode(CodecDesc::Identity, app.core().task.layout(), model)
            .unwrap();
    assert_eq!(decoded, app.core().state.global);
    assert_eq!(app.run_over(), None);
    app.core().state.committed = 5;
    assert!(app.round_tasks(6, &devices).is_none());
    // The run's end, for the hub to tell its devices.
    assert_eq!(
        app.run_over().as_deref(),
        Some("the run is over: 5 rounds committed")
    );
}

/// Round `round` commits with a zero update from each of `delivered` (joined with 10
/// examples).
fn commit(app: &mut FlApp<Fmnist>, round: u64, delivered: &[NodeName]) {
    for node in delivered {
        app.join(node, 10).unwrap();
    }
    let zeros = vec![0.0; app.core().task.layout().len()];
    let bytes = UpdateEncoder::new(app.core().task.layout().clone(), CodecDesc::Identity)
        .unwrap()
        .encode(&zeros)
        .unwrap();
    let updates = delivered
        .iter()
        .map(|node| {
            let update = Update {
                round,
                node: node.clone(),
                num_examples: 10,
                train_loss: 0.5,
                codec: CodecDesc::Identity,
                payload_len: bytes.len() as u64,
            };
            (node.clone(), update, bytes.clone())
        })
        .collect();
    app.round_ended(RoundOutcome::Committed { round, updates });
}

#[test]
fn a_lossy_downlink_sends_deltas_to_devices_that_acknowledged_and_full_models_to_others() {
    let mut app = app("downlink", 2);
    app.core().settings.downlink = CodecDesc::Int8 { block: 0 };
    let devices = nodes(3);
    let first = app.round_tasks(1, &devices[..2]).unwrap();
    assert!(first.iter().all(|a| a.task.model == ModelPayload::Full));
    // dev-00 delivered, dev-01 did not.
    commit(&mut app, 1, &devices[..1]);
    let record = app.core().records.last().unwrap().clone();
    assert_eq!(record.train_loss, Some(0.5));
    assert_eq!(
        (record.contributors.as_slice(), record.dropped),
        (&devices[..1], 1)
    );
    let second = app.round_tasks(2, &devices).unwrap();
    let payloads: Vec<_> = second.iter().map(|a| a.task.model).collect();
    assert!(matches!(
        payloads[0],
        ModelPayload::Delta { base_round: 1, .. }
    ));
    assert_eq!(payloads[1..], [ModelPayload::Full, ModelPayload::Full]);
    // The device's own decode of its delta is the global to int8 precision.
    let (layout, codec) = {
        let core = app.core();
        (core.task.layout().clone(), core.settings.downlink)
    };
    let held = downlink::receive(
        &layout,
        codec,
        first[0].task.model,
        &first[0].model,
        None,
        1,
    )
    .unwrap();
    let view = downlink::receive(
        &layout,
        codec,
        second[0].task.model,
        &second[0].model,
        Some(&held),
        2,
    )
    .unwrap();
    let error = view
        .weights
        .iter()
        .zip(&app.core().state.global)
        .map(|(v, g)| (v - g).abs())
        .fold(0.0, f32::max);
    assert!(error < 1e-3, "{error}");
    assert!(second[0].model.len() < update::identity_len(&layout) / 3);
}

/// Central DP on the network: each committed round is charged (q = 1) and noised, the
/// account is saved with the state and restored by a restarted cloud, which stops
/// before the target; a run with rounds but no account cannot turn DP on.
#[test]
fn central_dp_rounds_are_charged_saved_and_stop_before_the_target() {
    use super::super::accountant::RdpAccountant;
    let dp = DpSettings {
        noise_multiplier: 3.0,
        delta: 1e-5,
        target_epsilon: Some(2.5),
    };
    let mut app = app("dp", 2);
    let dir = app.core().settings.state_dir.clone();
    app.core().settings.dp = Some((dp, 1.0));
    app.core().dp = Some(CentralDp::new(dp, 1.0, 2, 2));
    let devices = nodes(2);
    let before = app.core().state.global.clone();
    app.round_tasks(1, &devices).unwrap();
    commit(&mut app, 1, &devices);
    // Zero updates: what moved the model is the noise.
    assert_ne!(app.core().state.global, before);
    let record = app.core().records.last().unwrap().clone();
    assert_eq!(record.aggregated, 2);
    let mut accountant = RdpAccountant::new();
    accountant.compose(1.0, 3.0, 1);
    assert_eq!(record.epsilon, Some(accountant.epsilon(1e-5).0));

    // Restarted on the same directory: the account continues.
    let settings = FlSettings {
        dp: Some((dp, 1.0)),
        ..app.core().settings.clone()
    };
    drop(app);
    let mut restarted = FlApp::new(
        Fmnist::new(ComputeBackend::Flex),
        Images::default(),
        settings.clone(),
    )
    .unwrap();
    assert_eq!(restarted.core().state.round, 1);
    let mut rounds = 1;
    while restarted.round_tasks(rounds + 1, &devices).is_some() {
        rounds += 1;
        commit(&mut restarted, rounds, &devices);
        assert!(rounds < 5, "the target never stopped the run");
    }
    let spent = restarted.core().records.last().unwrap().epsilon.unwrap();
    accountant.compose(1.0, 3.0, rounds - 1);
    assert_eq!(spent, accountant.epsilon(1e-5).0);
    assert!(spent <= 2.5);
    accountant.compose(1.0, 3.0, 1);
    assert!(accountant.epsilon(1e-5).0 > 2.5);
    drop(restarted);

    // A cloud that cannot save its account sends no more models.
    let mut unsaved = FlApp::new(
        Fmnist::new(ComputeBackend::Flex),
        Images::default(),
        settings.clone(),
    )
    .unwrap();
    unsaved.core().settings.rounds = 100;
    unsaved.core().dp = Some(CentralDp::new(dp, 1.0, 2, 2));
    unsaved.core().settings.state_dir = dir.join(super::super::state::FILE_NAME).join("not-a-dir");
    assert!(unsaved.round_tasks(rounds + 1, &devices).is_none());
    drop(unsaved);

    // The account lost: refused.
    std::fs::remove_file(dir.join(super::super::central_dp::ACCOUNT_FILE)).unwrap();
    let refused = FlApp::new(
        Fmnist::new(ComputeBackend::Flex),
        Images::default(),
        settings,
    );
    assert!(matches!(refused, Err(StateError::Unaccounted { .. })));
}

/// Two clouds on one `--state` directory would overwrite each other's state and
/// privacy account: the second is refused while the first runs, and can start once
/// the first has gone.
#[test]
fn a_second_cloud_on_the_same_state_directory_is_refused() {
    let first = app("locked", 2);
    let second = FlApp::new(
        Fmnist::new(ComputeBackend::Flex),
        Images::default(),
        first.core().settings.clone(),
    );
    let Err(err) = second else {
        panic!(
            "a second cloud started on {}",
            first.core().settings.state_dir.display()
        );
    };
    assert!(err.to_string().contains("another tandem-cloud"), "{err}");
    let settings = first.core().settings.clone();
    drop(first);
    assert!(
        FlApp::new(
            Fmnist::new(ComputeBackend::Flex),
            Images::default(),
            settings
        )
        .is_ok()
    );
}

/// One participant that never reports: the round aborts (quorum of all), the
/// silent device is backed off like one that missed a committed round, the aborted
/// round does not count toward `--rounds`, and the run still commits them all.
#[test]
fn an_aborted_round_backs_off_the_silent_and_does_not_count() {
    let mut app = app("aborted", 2);
    app.core().settings.rounds = 2;
    let devices = nodes(3);
    let silent = devices[1].clone();
    let first = [devices[0].clone(), silent.clone()];
    app.round_tasks(1, &first).unwrap();
    app.round_ended(RoundOutcome::Aborted {
        round: 1,
        delivered: vec![devices[0].clone()],
    });
    assert_eq!(app.committed(), 0);
    // The silent device sits out the next round while two others can fill it.
    for seed in 0..10 {
        app.core().settings.seed = seed;
        assert!(!app.participants(&devices).contains(&silent));
    }
    // Two rounds still commit; the next round after them is the end.
    let (a, b) = (devices[0].clone(), devices[2].clone());
    let tasks = app.round_tasks(2, &[a.clone(), b.clone()]).unwrap();
    assert_eq!(tasks[0].task.round, 2, "round ids go on increasing");
    commit(&mut app, 2, &[a.clone(), b.clone()]);
    assert!(app.round_tasks(3, &[a.clone(), b.clone()]).is_some());
    commit(&mut app, 3, &[a.clone(), b.clone()]);
    assert_eq!(app.committed(), 2);
    assert!(app.round_tasks(4, &[a, b]).is_none());
}

/// A cloud whose rounds abort `max_aborted` times in a row stops starting rounds.
#[test]
fn rounds_that_abort_again_and_again_end_the_run() {
    let mut app = app("abort-streak", 2);
    app.core().settings.max_aborted = 3;
    let devices = nodes(2);
    for round in 1..=3 {
        assert!(app.round_tasks(round, &devices).is_some(), "round {round}");
        app.round_ended(RoundOutcome::Aborted {
            round,
            delivered: vec![devices[0].clone()],
        });
    }
    assert!(app.round_tasks(4, &devices).is_none());
    assert_eq!(app.committed(), 0);
    let end = app.run_over().expect("the run is over");
    assert!(
        end.contains("3 rounds aborted in a row") && end.contains(devices[1].as_str()),
        "{end}"
    );
}

/// The default quorum is 80% of a round (at least what the strategy needs, at most
/// the round), so one silent device of ten does not abort every round.
#[test]
fn the_default_quorum_is_most_of_a_round_not_all_of_it() {
    for (per_round, strategy, want) in [
        (10, StrategySpec::default(), 8),
        (1, StrategySpec::default(), 1),
        (4, StrategySpec::default(), 4),
        (5, StrategySpec::default(), 4),
        (100, StrategySpec::default(), 80),
    ] {
        assert_eq!(
            FlSettings::default_min_updates(per_round, &strategy),
            want,
            "{per_round} per round"
        );
    }
    let krum: StrategySpec = "krum:f=2".parse().unwrap();
    assert_eq!(
        FlSettings::default_min_updates(5, &krum),
        krum.min_updates().clamp(4, 5)
    );
}

/// One device cannot set its own FedAvg weight: its count is fixed by its first
/// Join (a second Join with another is refused), and an update claiming 2^24
/// examples, sign-flipped x10, beside nine honest ones, weighs what was declared and
/// is bounded by the round's medians: the model still moves the honest way.
#[test]
fn a_device_cannot_raise_its_declared_count_or_outweigh_the_round() {
    let mut app = app("inflated", 10);
    let devices = nodes(10);
    for node in &devices {
        app.join(node, 600).unwrap();
    }
    let attacker = devices[9].clone();
    let refused = app.join(&attacker, 1 << 24).unwrap_err();
    assert!(refused.contains("600"), "{refused}");
    app.join(&attacker, 600).unwrap();
    assert!(app.join(&devices[0], 0).is_err());
    app.round_tasks(1, &devices).unwrap();
    let layout = app.core().task.layout().clone();
    let direction: Vec<f32> = (0..layout.len())
        .map(|i| ((i % 7) as f32 - 3.0) * 1e-3)
        .collect();
    let encode = |scale: f32| {
        let values: Vec<f32> = direction.iter().map(|d| d * scale).collect();
        UpdateEncoder::new(layout.clone(), CodecDesc::Identity)
            .unwrap()
            .encode(&values)
            .unwrap()
    };
    let updates = devices
        .iter()
        .map(|node| {
            let (scale, claimed) = if *node == attacker {
                (-10.0, 1 << 24)
            } else {
                (1.0, 600)
            };
            let bytes = encode(scale);
            let update = Update {
                round: 1,
                node: node.clone(),
                num_examples: claimed,
                train_loss: 0.5,
                codec: CodecDesc::Identity,
                payload_len: bytes.len() as u64,
            };
            (node.clone(), update, bytes)
        })
        .collect();
    let before = app.core().state.global.clone();
    app.round_ended(RoundOutcome::Committed { round: 1, updates });
    let moved: Vec<f64> = app
        .core()
        .state
        .global
        .iter()
        .zip(&before)
        .map(|(after, before)| f64::from(after - before))
        .collect();
    let along = moved
        .iter()
        .zip(&direction)
        .map(|(m, d)| m * f64::from(*d))
        .sum::<f64>()
        / direction.iter().map(|d| f64::from(*d).powi(2)).sum::<f64>();
    // Nine honest updates of 1 and one bounded to the median's length at -1: 0.8.
    assert!(
        (along - 0.8).abs() < 0.01,
        "moved {along} of the honest direction"
    );
}

#[test]
fn a_device_that_missed_a_deadline_sits_out_unless_it_is_needed() {
    let mut app = app("misses", 2);
    let devices = nodes(4);
    let missed = devices[1].clone();
    app.round_tasks(1, &[devices[0].clone(), missed.clone()])
        .unwrap();
    commit(&mut app, 1, &devices[..1]);
    // Round 2: the three others are enough; round 3 too (it missed once: 1 round out,
    // so it is back from round 3 on).
    for _ in 0..10 {
        assert!(!app.participants(&devices).contains(&missed));
        app.core().settings.seed += 1;
    }
    // Only two devices available: it fills the round.
    assert!(app.participants(&devices[..2]).contains(&missed));
    app.core().state.round = 2;
    let back = (0..20).any(|seed| {
        app.core().settings.seed = seed;
        app.participants(&devices).contains(&missed)
    });
    assert!(back, "back in the pool after sitting out");
}
