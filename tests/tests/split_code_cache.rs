//! Frozen-bottom code caching over loopback QUIC (after EcoFed): after the first epoch
//! the device sends review ids instead of codes, and the run trains as if it had resent
//! them; a cloud that keeps nothing gets the codes every time.
#![cfg(feature = "model")]

mod common;

use common::split::{model_cached, tiny_data};
use common::{Cloud, device_endpoint, node};
use tandem_cloud::split_app::{SplitApp, SplitSettings};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{self, TextTokenizer};
use tandem_runtime::model::split::device::{DeviceSetup, DeviceTrainer};
use tandem_runtime::model::split::run::{self, HeldOut, RunConfig, RunPosition, StepRecord};
use tandem_runtime::model::split::{LinkCodec, LrSchedule, Mode};
use tandem_runtime::transport::TransportLimits;
use tandem_runtime::transport::link::{DeviceLink, LinkTarget, ReconnectPolicy};
use tandem_runtime::wire::Capabilities;

/// Three epochs of the eight reviews in batches of four.
const STEPS: u64 = 6;

fn schedule() -> LrSchedule {
    LrSchedule {
        peak: 1e-3,
        warmup: 2,
        total: STEPS,
    }
}

/// A frozen-bottom run against a cloud keeping `budget` bytes of codes, the device
/// caching codes or not; returns its steps.
async fn train(test: &str, budget: usize, cache_codes: bool) -> Vec<StepRecord> {
    let settings = SplitSettings {
        model_dir: minilm::model_dir(),
        backend: ComputeBackend::Flex,
        schedule: schedule(),
        seed: 3,
        state_dir: None,
        code_cache_bytes: budget,
    };
    let app = SplitApp::new(settings).expect("model cached");
    let cloud = Cloud::start_in_temp_dir(test, &TransportLimits::default(), app).await;
    let setup = DeviceSetup {
        cut: 1,
        mode: Mode::FrozenBottom,
        codec: LinkCodec::parse("identity").unwrap(),
        lora_rank: 4,
        schedule: schedule(),
        seed: 5,
    };
    let mut trainer =
        DeviceTrainer::new(&minilm::model_dir(), ComputeBackend::Flex, setup).unwrap();
    let mut target = LinkTarget::new(
        cloud.addr,
        tandem_runtime::transport::DEFAULT_SERVER_NAME,
        node("board-1"),
        Capabilities::SPLIT,
    );
    trainer.describe(&mut target.hello, RunPosition::fresh(0));
    let endpoint = device_endpoint(&cloud, "board-1");
    let mut link = DeviceLink::connect(endpoint, target, ReconnectPolicy::default())
        .await
        .unwrap();
    let config = RunConfig {
        steps: STEPS,
        batch_size: 4,
        eval_every: STEPS,
        dev_limit: 0,
        test_limit: 0,
        held_out: HeldOut::Test,
        seed: 1,
        start_step: 0,
        checkpoint_every: 0,
        cache_codes,
    };
    let tokenizer = TextTokenizer::load(&minilm::model_dir(), 32).unwrap();
    let report = run::run(
        &mut link,
        &mut trainer,
        &tokenizer,
        &tiny_data(),
        config,
        |_| {},
        |_, _| Ok(()),
    )
    .await
    .unwrap();
    link.close();
    cloud.shutdown().await;
    report.steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_first_epoch_ids_replace_codes_and_training_is_unchanged() {
    if !model_cached() {
        return;
    }
    let resent = train("split-codes-resent", 1 << 20, false).await;
    let cached = train("split-codes-cached", 1 << 20, true).await;
    let refused = train("split-codes-refused", 0, true).await;
    // Epoch 1 (steps 0-1) sends every code; epochs 2 and 3 ids only, a few hundred bytes
    // where the codes took tens of kilobytes.
    for (i, (c, r)) in cached.iter().zip(&resent).enumerate() {
        assert_eq!(c.cached, i >= 2, "step {i}");
        assert!(!r.cached);
        if c.cached {
            assert!(c.up_bytes < 300, "step {i}: {} B", c.up_bytes);
            assert!(r.up_bytes > 10_000, "step {i}: {} B", r.up_bytes);
        } else {
            // The four ids (under 128: one byte each) ride along, asking the cloud to keep.
            assert_eq!(c.up_bytes, r.up_bytes + 4, "step {i}");
        }
        // The cloud trains on the codes it kept as on the resent ones (which differ only
        // by float rounding of the other batch's padding).
        assert!(
            (c.loss - r.loss).abs() <= 1e-4 * r.loss.abs().max(1.0),
            "step {i}: {} vs {}",
            c.loss,
            r.loss
        );
    }
    // A cloud that keeps nothing says so, and the device keeps sending codes.
    assert!(refused.iter().all(|s| !s.cached && s.up_bytes > 10_000));
}
