//! Split fine-tuning fixtures: a tiny review set, the model-cache check, a device at cut
//! 1 and its link to a loopback cloud.

use super::{Cloud, device_endpoint, node};
use tandem_cloud::split_app::SplitSettings;
use tandem_runtime::data::rotten_tomatoes::{Review, RottenTomatoes};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{self, ModelError, TextTokenizer};
use tandem_runtime::model::split::device::{DeviceSetup, DeviceTrainer};
use tandem_runtime::model::split::run::{self, HeldOut, RunConfig, RunPosition, RunReport};
use tandem_runtime::model::split::{LinkCodec, LrSchedule, Mode, TopTraining};
use tandem_runtime::session::step_limits::StepCaps;
use tandem_runtime::transport::link::{DeviceLink, LinkError, LinkTarget, ReconnectPolicy};
use tandem_runtime::wire::Capabilities;

/// Eight short reviews, half fresh: the whole training set is one batch, so the loss
/// of that batch must fall as the halves train.
pub fn tiny_data() -> RottenTomatoes {
    let review = |text: &str, label| Review {
        text: text.into(),
        label,
        movie: "m".into(),
    };
    let train = vec![
        review("a gorgeous, witty, seductive movie.", 1),
        review("the acting is dreadful and the plot is dull.", 0),
        review("one of the best films of the year.", 1),
        review("a tedious, lifeless mess.", 0),
        review("charming and funny from start to finish.", 1),
        review("it never rises above its silly premise.", 0),
        review("a moving, beautifully made story.", 1),
        review("boring, predictable and far too long.", 0),
    ];
    RottenTomatoes {
        dev: train[..4].to_vec(),
        test: train[4..].to_vec(),
        train,
    }
}

/// Whether the model is cached (else a skip note, or a failure in CI).
pub fn model_cached() -> bool {
    match TextTokenizer::load(&minilm::model_dir(), 32) {
        Err(ModelError::Missing { path }) => {
            tandem_runtime::paths::skip_missing_cache(path.display());
            false
        }
        other => other.map(|_| true).unwrap(),
    }
}

/// Peak 1e-3 after 2 warm-up steps, over `steps`.
pub fn schedule(steps: u64) -> LrSchedule {
    LrSchedule {
        peak: 1e-3,
        warmup: 2,
        total: steps,
    }
}

/// The cloud's settings for runs of `steps`: CPU, seed 3, no snapshots, no code cache.
pub fn cloud_settings(steps: u64) -> SplitSettings {
    SplitSettings {
        model_dir: minilm::model_dir(),
        backend: ComputeBackend::Flex,
        schedule: schedule(steps),
        seed: 3,
        state_dir: None,
        code_cache_bytes: 0,
        step_caps: StepCaps::default(),
        top: TopTraining::PerDevice,
        batch_tokens: 0,
    }
}

/// A device at cut 1 in `mode` with `codec` for runs of `steps` in batches of 4
/// (seed 5).
pub fn trainer(mode: Mode, codec: &str, steps: u64) -> DeviceTrainer {
    trainer_of(setup(mode, codec, steps))
}

/// A device set up as `setup` says.
pub fn trainer_of(setup: DeviceSetup) -> DeviceTrainer {
    DeviceTrainer::new(&minilm::model_dir(), ComputeBackend::Flex, setup).unwrap()
}

/// [`trainer`]'s settings: batches of 4 reviews of at most 32 tokens.
pub fn setup(mode: Mode, codec: &str, steps: u64) -> DeviceSetup {
    DeviceSetup {
        cut: 1,
        mode,
        codec: LinkCodec::parse(codec).unwrap(),
        lora_rank: 4,
        schedule: schedule(steps),
        seed: 5,
        batch_size: 4,
        max_len: 32,
    }
}

/// What device "board-1" asks `cloud` for: `trainer`'s request at `position`.
pub fn target(cloud: &Cloud, trainer: &DeviceTrainer, position: RunPosition) -> LinkTarget {
    let mut target = LinkTarget::new(
        cloud.addr,
        tandem_runtime::transport::DEFAULT_SERVER_NAME,
        node("board-1"),
        Capabilities::SPLIT,
    );
    trainer.describe(&mut target.hello, position);
    target
}

/// "board-1"'s link to `cloud` for `trainer` at `position`.
pub async fn connect(
    cloud: &Cloud,
    trainer: &DeviceTrainer,
    position: RunPosition,
) -> Result<DeviceLink, LinkError> {
    let endpoint = device_endpoint(cloud, "board-1");
    DeviceLink::connect(
        endpoint,
        target(cloud, trainer, position),
        ReconnectPolicy::default(),
    )
    .await
}

/// A run of `steps` from step 0, one evaluation at the end, no checkpoints, no code
/// caching (seed 1).
pub fn run_config(steps: u64) -> RunConfig {
    RunConfig {
        steps,
        eval_every: steps,
        dev_limit: 0,
        test_limit: 0,
        held_out: HeldOut::Test,
        seed: 1,
        start_step: 0,
        checkpoint_every: 0,
        cache_codes: false,
    }
}

/// `trainer` runs `config` on [`tiny_data`] over `link`, with no event or checkpoint
/// handlers.
pub async fn run_tiny(
    link: &mut DeviceLink,
    trainer: &mut DeviceTrainer,
    config: RunConfig,
) -> RunReport {
    let tokenizer = TextTokenizer::load(&minilm::model_dir(), 32).unwrap();
    run::run(
        link,
        trainer,
        &tokenizer,
        &tiny_data(),
        config,
        |_| {},
        |_, _| Ok(()),
    )
    .await
    .unwrap()
}
