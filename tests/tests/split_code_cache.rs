//! Frozen-bottom code caching over loopback QUIC (after EcoFed): after the first epoch
//! the device sends review ids instead of codes, and the run trains as if it had resent
//! them; a cloud that keeps nothing gets the codes every time.
#![cfg(feature = "model")]

mod common;

use common::Cloud;
use common::split::{cloud_settings, connect, model_cached, run_config, run_tiny, trainer};
use tandem_cloud::split_app::{SplitApp, SplitSettings};
use tandem_runtime::model::split::Mode;
use tandem_runtime::model::split::run::{RunConfig, RunPosition, StepRecord};
use tandem_runtime::transport::TransportLimits;

/// Three epochs of the eight reviews in batches of four.
const STEPS: u64 = 6;

/// A frozen-bottom run against a cloud keeping `budget` bytes of codes, the device
/// caching codes or not; returns its steps.
async fn train(test: &str, budget: usize, cache_codes: bool) -> Vec<StepRecord> {
    let settings = SplitSettings {
        code_cache_bytes: budget,
        ..cloud_settings(STEPS)
    };
    let app = SplitApp::new(settings).expect("model cached");
    let cloud = Cloud::start_in_temp_dir(test, &TransportLimits::default(), app).await;
    let mut trainer = trainer(Mode::FrozenBottom, "identity", STEPS);
    let mut link = connect(&cloud, &trainer, RunPosition::fresh(0))
        .await
        .unwrap();
    let config = RunConfig {
        cache_codes,
        ..run_config(STEPS)
    };
    let report = run_tiny(&mut link, &mut trainer, config).await;
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
