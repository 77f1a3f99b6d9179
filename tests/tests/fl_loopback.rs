//! Federated learning over loopback QUIC with mutual TLS: three device links train LeNet-5
//! on their slices of Fashion-MNIST for three rounds against `FlApp`; the global model's
//! test accuracy rises, and a cloud restarted on the state directory continues after the
//! last committed round. A device restarted from its checkpoint resends the round it had
//! trained and continues exactly as one that was never killed, its model view included
//! (the base of the next int8 downlink delta).
#![cfg(feature = "model")]

mod common;

use common::{Cloud, device_endpoint, node, temp_dir};
use std::time::Duration;
use tandem_cloud::fl::app::{FlApp, FlSettings};
use tandem_cloud::fl::strategy::StrategySpec;
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::fl::client::{ClientError, FlClient};
use tandem_runtime::fl::downlink::{self, DownlinkError, ModelView};
use tandem_runtime::fl::fmnist::Fmnist;
use tandem_runtime::fl::task::Task;
use tandem_runtime::fl::update::decode_shared;
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::session::fl::RoundClient;
use tandem_runtime::transport::link::{DeviceLink, LinkTarget, ReconnectPolicy};
use tandem_runtime::transport::{self, TransportLimits};
use tandem_runtime::wire::{Capabilities, CodecDesc, Join, ModelPayload, RoundConfig, RoundTask};

const DEVICES: usize = 3;
const ROUNDS: u64 = 3;

fn settings(state_dir: &std::path::Path, rounds: u64) -> FlSettings {
    FlSettings {
        rounds,
        per_round: DEVICES,
        min_updates: DEVICES,
        deadline: Duration::from_secs(120),
        local: common::local_sgd(),
        codec: CodecDesc::Int8 { block: 64 },
        downlink: CodecDesc::Int8 { block: 0 },
        strategy: StrategySpec::default(),
        bound: None,
        dp: None,
        seed: 11,
        state_dir: state_dir.to_path_buf(),
        max_examples: tandem_cloud::fl::validate::MAX_EXAMPLES,
        median_caps: tandem_cloud::fl::round_bounds::MedianCaps::NETWORK,
        max_aborted: 10,
    }
}

/// One device of `task` on `data`: joins, then takes part in `rounds` rounds; returns
/// how many committed.
async fn device<T: Task + 'static>(
    cloud_addr: std::net::SocketAddr,
    endpoint: quinn::Endpoint,
    name: String,
    task: T,
    data: T::Data,
    rounds: u64,
) -> usize {
    let mut target = LinkTarget::new(
        cloud_addr,
        transport::DEFAULT_SERVER_NAME,
        node(&name),
        Capabilities::FL,
    );
    target.hello.model.name = task.name().try_into().unwrap();
    let policy = ReconnectPolicy {
        first_wait: Duration::from_millis(20),
        give_up_after: Duration::from_secs(30),
        ..ReconnectPolicy::default()
    };
    let mut link = DeviceLink::connect(endpoint, target, policy)
        .await
        .expect("link up");
    let mut client = FlClient::new(task, data, node(&name), 1);
    link.join(Join {
        node: node(&name),
        num_examples: client.examples(),
        capabilities: Capabilities::FL,
    })
    .await
    .unwrap();
    let mut machine = RoundClient::new(Duration::from_secs(2));
    let mut committed = 0;
    for _ in 0..rounds {
        let result = link
            .run_round(&mut machine, |task, model| {
                let trained = client.train(task, model).expect("local training");
                Some((trained.update, trained.payload))
            })
            .await
            .unwrap()
            .expect("a result before the deadline");
        committed += usize::from(result.committed);
    }
    link.close();
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_devices_three_rounds_accuracy_rises_and_a_restart_resumes() {
    let Some((slices, test)) = common::fashion_mnist_clients(DEVICES, 5) else {
        return;
    };
    let dir = temp_dir("fl-loopback");
    let state = dir.join("fl-state");
    let task = Fmnist::new(ComputeBackend::Flex);
    let app = FlApp::new(task, test.clone(), settings(&state, ROUNDS)).unwrap();
    assert_eq!(app.round(), 0);
    let cloud = Cloud::start_with(&dir, &TransportLimits::default(), app).await;
    let devices: Vec<_> = slices
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let name = format!("dev-{i}");
            let endpoint = device_endpoint(&cloud, &name);
            let task = Fmnist::new(ComputeBackend::Flex);
            tokio::spawn(device(cloud.addr, endpoint, name, task, data, ROUNDS))
        })
        .collect();
    for d in devices {
        assert_eq!(d.await.unwrap(), ROUNDS as usize);
    }
    cloud.shutdown().await;

    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("metrics.json")).unwrap()).unwrap();
    let rounds = metrics["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), ROUNDS as usize);
    let accuracy: Vec<f64> = rounds
        .iter()
        .map(|r| r["accuracy"].as_f64().unwrap())
        .collect();
    assert!(
        rounds
            .iter()
            .all(|r| r["aggregated"] == DEVICES && r["refused"] == 0),
        "{metrics}"
    );
    // From a random start (about 10%) to well above chance, rising overall.
    assert!(
        accuracy[2] > 0.45 && accuracy[2] > accuracy[0],
        "{accuracy:?}"
    );

    // A cloud restarted on the same state continues after round 3.
    let again = FlApp::new(
        Fmnist::new(ComputeBackend::Flex),
        test,
        settings(&state, ROUNDS + 2),
    )
    .unwrap();
    assert_eq!(again.round(), ROUNDS);
}

/// Two devices fine-tune MiniLM's adapters on their movies' reviews over QUIC: both rounds
/// commit both updates, and only the adapters and the head travel, at top-3%.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentiment_devices_send_compressed_adapters_over_the_network() {
    use tandem_runtime::data::rotten_tomatoes::{DataError, RottenTomatoes, default_path};
    use tandem_runtime::fl::sentiment::{self, NETWORK_RANK, Reviews, Sentiment};
    use tandem_runtime::fl::update::identity_len;
    use tandem_runtime::model::minilm::{TextTokenizer, model_dir};
    let (tokenizer, corpus) = match (
        TextTokenizer::load(&model_dir(), sentiment::MAX_TOKENS),
        RottenTomatoes::load(&default_path()),
    ) {
        (Ok(t), Ok(c)) => (t, c),
        (Err(err), _) => return tandem_runtime::paths::skip_missing_cache(err),
        (_, Err(err @ DataError::Missing { .. })) => {
            return tandem_runtime::paths::skip_missing_cache(err);
        }
        (_, Err(err)) => panic!("{err}"),
    };
    let task = || Sentiment::load(ComputeBackend::Flex, &model_dir(), NETWORK_RANK).unwrap();
    // Two movies per device, dealt out to 400 clients: movies i and 400 + i of the 409.
    let data = |i: usize| {
        Reviews::tokenize(&tokenizer, sentiment::movies_of(&corpus.train, i, 400)).unwrap()
    };
    let test = Reviews::tokenize(&tokenizer, corpus.dev.iter().take(32)).unwrap();
    let dir = temp_dir("fl-loopback-sentiment");
    let state = dir.join("fl-state");
    let settings = FlSettings {
        rounds: 2,
        per_round: 2,
        min_updates: 2,
        local: tandem_runtime::fl::task::LocalConfig {
            epochs: 1,
            batch: 8,
            lr: 0.05,
            momentum: 0.9,
            proximal_mu: 0.0,
            max_steps: None,
        },
        codec: CodecDesc::TopK { ratio_ppm: 30_000 },
        downlink: CodecDesc::Identity,
        ..settings(&state, 2)
    };
    let layout = task().layout().clone();
    let app = FlApp::new(task(), test, settings).unwrap();
    let cloud = Cloud::start_with(&dir, &TransportLimits::default(), app).await;
    let devices: Vec<_> = (0..2)
        .map(|i| {
            let name = format!("reviewer-{i}");
            let endpoint = device_endpoint(&cloud, &name);
            tokio::spawn(device(cloud.addr, endpoint, name, task(), data(i), 2))
        })
        .collect();
    for d in devices {
        assert_eq!(d.await.unwrap(), 2);
    }
    cloud.shutdown().await;
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("metrics.json")).unwrap()).unwrap();
    let rounds = metrics["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        assert!(r["aggregated"] == 2 && r["refused"] == 0, "{r}");
        assert!(r["accuracy"].as_f64().is_some(), "{r}");
        // Per update: 3% of the adapters' 73,728 values (an index gap and an f32 each)
        // and the head raw, against 298 KB of f32 adapters and head.
        let per_update = r["uplink_bytes"].as_u64().unwrap() / 2;
        let f32_update = identity_len(&layout) as u64;
        assert!(
            per_update * 15 < f32_update,
            "{per_update} B against {f32_update} B"
        );
    }
}

/// Round `round`'s task carrying `global` to a device holding `base` (int8: the full
/// model, or a delta against `base`), top-1% updates; and the view the device will have.
fn round_task(
    round: u64,
    global: &[f32],
    base: Option<&ModelView>,
    layout: &tandem_runtime::fl::Layout,
    model_codec: CodecDesc,
) -> (RoundTask, Vec<u8>, ModelView) {
    let sent = downlink::send(layout, model_codec, global, base, round).unwrap();
    let task = RoundTask {
        round,
        deadline_ms: 60_000,
        config: RoundConfig {
            local_epochs: 1,
            batch_size: 32,
            lr: 0.05,
            proximal_mu: 0.0,
        },
        model: sent.payload,
        model_codec,
        update_codec: CodecDesc::TopK { ratio_ppm: 10_000 },
        payload_len: sent.bytes.len() as u64,
        factors_len: 0,
    };
    (task, sent.bytes, sent.view)
}

#[test]
fn a_restarted_device_resends_its_round_and_continues_as_if_never_killed() {
    let Some((slices, _)) = common::fashion_mnist_clients(DEVICES, 5) else {
        return;
    };
    let dir = temp_dir("fl-device-restart");
    let task = || Fmnist::new(ComputeBackend::Flex);
    let layout = task().layout().clone();
    let int8 = CodecDesc::Int8 { block: 0 };
    let global_1 = task().initial_weights(3);
    let (r1, m1, view_1) = round_task(1, &global_1, None, &layout, int8);
    // Round 2's model moved on, and travels as a delta against round 1's.
    let global_2: Vec<f32> = global_1.iter().map(|w| w * 0.99 + 1e-3).collect();
    let (r2, m2, view_2) = round_task(2, &global_2, Some(&view_1), &layout, int8);
    assert!(matches!(
        r2.model,
        ModelPayload::Delta { base_round: 1, .. }
    ));
    let client = |name: &str, checkpoint: &str| {
        FlClient::new(task(), slices[0].clone(), node(name), 1)
            .with_checkpoint(dir.join(checkpoint))
            .unwrap()
    };

    // Never killed.
    let mut steady = client("dev-a", "steady.bin");
    let steady_1 = steady.train(&r1, &m1).unwrap();
    let steady_2 = steady.train(&r2, &m2).unwrap();

    // Killed after round 1 (its update committed to disk), then restarted.
    let mut first_life = client("dev-a", "killed.bin");
    assert_eq!(first_life.train(&r1, &m1).unwrap(), steady_1);
    drop(first_life);
    let mut second_life = client("dev-a", "killed.bin");
    assert_eq!(second_life.last_round(), Some(1));
    // Round 1 asked again with its model: the checkpointed bytes are sent again.
    assert_eq!(second_life.train(&r1, &m1).unwrap(), steady_1);
    // Round 2 continues from the checkpointed top-k residuals: bit for bit the same.
    assert_eq!(second_life.train(&r2, &m2).unwrap(), steady_2);
    // A cloud started afresh sends round 1 again, with its own model: that is a new run,
    // trained from a fresh codec state (here the same model, so the same update).
    assert_eq!(second_life.train(&r1, &m1).unwrap(), steady_1);

    // Without the checkpointed model, round 2's delta cannot be used.
    let mut amnesiac = FlClient::new(task(), slices[0].clone(), node("dev-a"), 1);
    let err = amnesiac
        .train(&r2, &m2)
        .expect_err("a delta without its base");
    assert!(
        matches!(
            err,
            ClientError::Model(DownlinkError::MissingBase {
                base_round: 1,
                held: None
            })
        ),
        "{err}"
    );
    // Given round 2's model in full, its update still differs without the top-k
    // residuals: the bit-for-bit check above can fail.
    let (r2_full, m2_full, _) = round_task(2, &view_2.weights, None, &layout, CodecDesc::Identity);
    assert_ne!(
        amnesiac.train(&r2_full, &m2_full).unwrap().payload,
        steady_2.payload
    );

    // Another device's checkpoint is refused with its reason.
    let err = FlClient::new(task(), slices[0].clone(), node("dev-b"), 1)
        .with_checkpoint(dir.join("killed.bin"))
        .err()
        .expect("a foreign checkpoint");
    assert!(err.to_string().contains("fmnist/dev-a"), "{err}");
}

#[test]
fn an_acp_round_carries_its_shared_factors_to_the_device() {
    let Some((slices, _)) = common::fashion_mnist_clients(1, 5) else {
        return;
    };
    let task = Fmnist::new(ComputeBackend::Flex);
    let layout = task.layout().clone();
    let acp = CodecDesc::Acp {
        rank: 4,
        factor_bits: 8,
    };
    let (mut round, model, _) = round_task(
        1,
        &task.initial_weights(3),
        None,
        &layout,
        CodecDesc::Identity,
    );
    round.update_codec = acp;
    let factors = SharedFactors::initial(&layout, acp, 9).unwrap();
    let mut payload = model.clone();
    payload.extend_from_slice(&factors.to_bytes());
    let with_factors = RoundTask {
        payload_len: payload.len() as u64,
        factors_len: factors.to_bytes().len() as u64,
        ..round.clone()
    };
    let mut client = FlClient::new(task, slices[0].clone(), node("dev-a"), 1);
    // Without its factors the round cannot be answered: a typed error, nothing sent.
    let err = client.train(&round, &model).expect_err("no factors");
    assert!(matches!(err, ClientError::Factors(_)), "{err}");
    let trained = client.train(&with_factors, &payload).unwrap();
    assert_eq!(trained.update.codec, acp);
    let delta = decode_shared(acp, &layout, &trained.payload, Some(&factors)).unwrap();
    assert_eq!(delta.len(), layout.len());
    assert!(delta.iter().any(|d| *d != 0.0));
    // One rank-4 factor per large tensor: far below the 247 KB of an f32 update.
    assert!(
        trained.payload.len() < 12_000,
        "{} B",
        trained.payload.len()
    );
}

/// Issue 31: byzantine clients as a device-side test mode (`tandem fl --byzantine`): a
/// hostile device trains as an honest one would, then sends its delta corrupted (here
/// sign-flipped x10) and the example count it claims.
#[test]
fn a_hostile_device_sends_its_honest_delta_corrupted_and_its_claimed_count() {
    use tandem_runtime::fl::byzantine::Attack;
    let Some((slices, _)) = common::fashion_mnist_clients(DEVICES, 5) else {
        return;
    };
    let task = || Fmnist::new(ComputeBackend::Flex);
    let layout = task().layout().clone();
    let global = task().initial_weights(3);
    let (mut round, model, _) = round_task(1, &global, None, &layout, CodecDesc::Identity);
    round.update_codec = CodecDesc::Identity;
    let client = || FlClient::new(task(), slices[0].clone(), node("dev-a"), 1);
    let honest = client().train(&round, &model).unwrap();
    let attack: Attack = "sign-flip:10".parse().unwrap();
    let mut hostile = client().with_attack(attack, Some(1 << 24));
    assert_eq!(hostile.examples(), 1 << 24, "its Join declares the claim");
    let hostile = hostile.train(&round, &model).unwrap();
    assert_eq!(hostile.update.num_examples, 1 << 24);
    assert_eq!(honest.update.num_examples, client().examples());
    let decode = |payload: &[u8]| {
        tandem_runtime::fl::update::decode(CodecDesc::Identity, &layout, payload).unwrap()
    };
    let (honest, hostile) = (decode(&honest.payload), decode(&hostile.payload));
    assert!(honest.iter().any(|d| *d != 0.0));
    for (h, x) in honest.iter().zip(&hostile) {
        assert!(
            (x + 10.0 * h).abs() <= 1e-6 * h.abs().max(1e-3),
            "{x} vs -10 x {h}"
        );
    }
}
