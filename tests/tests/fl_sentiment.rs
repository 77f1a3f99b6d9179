//! The `sentiment` task in the federated simulation, on the real model and corpus: the
//! clients are movies, the rounds train and send only the adapters and the head, rounds
//! skip evaluation as asked, and the centralised baseline trains on exactly as many
//! examples as the sampled clients held.
#![cfg(feature = "model")]

use tandem_cloud::fl::simulate::{Simulation, SimulationConfig};
use tandem_cloud::fl::strategy::StrategySpec;
use tandem_runtime::data::rotten_tomatoes::{DataError, RottenTomatoes, default_path};
use tandem_runtime::fl::sentiment::{self, Reviews, Sentiment};
use tandem_runtime::fl::task::{LocalConfig, Task};
use tandem_runtime::fl::update::identity_len;
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{ModelError, TextTokenizer, model_dir};
use tandem_runtime::wire::CodecDesc;

/// The task (rank 2), six movies' reviews and 48 dev reviews; `None` (noted) without the
/// cache.
fn cached() -> Option<(Sentiment, Vec<Reviews>, Reviews)> {
    let tokenizer = match TextTokenizer::load(&model_dir(), sentiment::MAX_TOKENS) {
        Err(ModelError::Missing { path }) => {
            tandem_runtime::paths::skip_missing_cache(path.display());
            return None;
        }
        other => other.unwrap(),
    };
    let data = match RottenTomatoes::load(&default_path()) {
        Err(DataError::Missing { path }) => {
            tandem_runtime::paths::skip_missing_cache(path.display());
            return None;
        }
        other => other.unwrap(),
    };
    let task = Sentiment::load(ComputeBackend::Flex, &model_dir(), 2).unwrap();
    let mut clients = sentiment::by_movie(&tokenizer, &data.train).unwrap();
    // Small movies keep the test short.
    clients.retain(|c| c.len() <= 12);
    clients.truncate(6);
    let test = Reviews::tokenize(&tokenizer, data.dev.iter().take(48)).unwrap();
    Some((task, clients, test))
}

#[test]
fn movie_clients_send_adapters_only_and_the_baseline_sees_their_examples() {
    let Some((task, clients, test)) = cached() else {
        return;
    };
    assert_eq!(clients.len(), 6);
    let local = LocalConfig {
        epochs: 2,
        batch: 4,
        lr: 0.05,
        momentum: 0.9,
        proximal_mu: 0.0,
        max_steps: None,
    };
    let config = SimulationConfig {
        per_round: 2,
        local,
        codec: CodecDesc::Identity,
        strategy: StrategySpec::default(),
        bound: None,
        byzantine: None,
        byzantine_examples: None,
        median_caps: tandem_cloud::fl::round_bounds::MedianCaps::OFF,
        seed: 5,
        workers: 1,
        dp: None,
        eval_every: 2,
        rounds: 2,
        devices: None,
        secagg: None,
    };
    let mut sim = Simulation::new(&task, &clients, &test, config).unwrap();
    let initial = sim.global().to_vec();
    let records: Vec<_> = (0..2).map(|_| sim.run_round().unwrap()).collect();
    assert_eq!(records[0].accuracy, None);
    assert!(records[1].accuracy.is_some());
    assert!(records.iter().all(|r| r.aggregated == 2 && r.refused == 0));
    assert_ne!(sim.global(), initial);
    // Each update carries the adapters and head as f32 (plus its message framing):
    // 6 layers x 2 projections x (384 x 2 + 2 x 384), and 384 x 2 + 2.
    let params = 6 * 2 * 2 * 384 * 2 + 384 * 2 + 2;
    assert_eq!(task.layout().len(), params);
    let per_update = records[0].uplink_bytes / 2;
    let payload = identity_len(task.layout()) as u64;
    assert!(
        (payload..payload + 200).contains(&per_update),
        "{per_update} B for {params} parameters"
    );
    // The examples the sampled movies held, times the epochs, counted from the records.
    let held: u64 = records
        .iter()
        .flat_map(|r| &r.contributors)
        .map(|node| {
            let i: usize = node.trim_start_matches("sim-").parse().unwrap();
            clients[i].len() as u64 * 2
        })
        .sum();
    assert_eq!(sim.examples_to_see(2), held);
    let baseline = sim.centralised(2).unwrap();
    assert_eq!(baseline.examples, held);
    assert_eq!(baseline.steps, held.div_ceil(4));
    assert_eq!(baseline.eval.examples, 48);
}
