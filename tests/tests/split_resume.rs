//! Resuming split fine-tuning over loopback QUIC: a device killed mid-run and restarted
//! from its checkpoint, against a cloud that was restarted meanwhile, trains the same
//! steps with the same losses as a run that was never interrupted (nothing trained twice
//! on either side, nothing skipped); a resume the cloud cannot match is refused with
//! its reason.
#![cfg(feature = "model")]

mod common;

use common::split::{
    cloud_settings, connect, model_cached, run_config, setup, tiny_data, trainer, trainer_of,
};
use common::{Cloud, TempDir, temp_dir};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tandem_cloud::split_app::{SplitApp, SplitSettings};
use tandem_runtime::model::minilm::{self, TextTokenizer};
use tandem_runtime::model::split::Mode;
use tandem_runtime::model::split::device::{DeviceError, DeviceSetup, DeviceTrainer};
use tandem_runtime::model::split::run::{self, RunConfig, RunError, RunPosition};
use tandem_runtime::transport::link::{DeviceLink, LinkError};
use tandem_runtime::transport::{TransportError, TransportLimits};

/// burn's random state (which initialises the device's and the tops' new weights) is
/// global to the process: the tests here take turns, or their runs could not match an
/// uninterrupted one loss for loss.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The run's length and checkpoint interval.
const STEPS: u64 = 6;
const EVERY: u64 = 2;

/// A fresh device process: train-bottom at cut 1 with the low-rank codec, whose
/// warm-started `Q` is codec state a resume must carry too.
fn device() -> DeviceTrainer {
    trainer(Mode::TrainBottom, "lowrank:r=4,bits=8", STEPS)
}

/// A cloud whose top snapshots are in `state` and whose certificates are in `pki`: made
/// there for a new cloud (`restarted_at` None), kept for a cloud restarted at an address
/// (port 0: any).
async fn cloud(pki: &Path, state: &Path, restarted_at: Option<SocketAddr>) -> Cloud {
    let settings = SplitSettings {
        state_dir: Some(state.to_path_buf()),
        ..cloud_settings(STEPS)
    };
    let app = SplitApp::new(settings).expect("model cached");
    let limits = TransportLimits::default();
    match restarted_at {
        Some(addr) => Cloud::restart_at(pki, addr, &limits, app).await,
        None => Cloud::start_with(pki, &limits, app).await,
    }
}

/// A cloud restarted on a new address.
fn anywhere() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// What both tests start from: their turn (see [`ONE_AT_A_TIME`]), a directory, the
/// device's checkpoint there and the uninterrupted run's losses; `None` (the test skips)
/// without the cached model.
struct Start {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    dir: TempDir,
    checkpoint: PathBuf,
    expected: Vec<(u64, f32)>,
}

impl Start {
    async fn new(test: &str) -> Option<Self> {
        if !model_cached() {
            return None;
        }
        let _turn = ONE_AT_A_TIME.lock().await;
        let dir = temp_dir(test);
        let checkpoint = dir.join("device.ckpt");
        let expected = uninterrupted(&dir).await;
        Some(Self {
            _turn,
            dir,
            checkpoint,
            expected,
        })
    }
}

/// Trains steps `position.start_step..until` of the run (two batches of four reviews
/// per epoch, so the data order matters), checkpointing to `checkpoint` every `EVERY`
/// steps and at the run's end; returns each step's loss and where it checkpointed. A
/// process stopped before the run's end (`until < STEPS`) dies there: no checkpoint at
/// `until`, and the link dropped without a goodbye.
async fn train(
    cloud: &Cloud,
    trainer: &mut DeviceTrainer,
    position: RunPosition,
    until: u64,
    checkpoint: &Path,
) -> (Vec<(u64, f32)>, Vec<u64>) {
    let mut link = connect(cloud, trainer, position).await.unwrap();
    let trained = train_on(&mut link, trainer, position, until, checkpoint).await;
    drop(link);
    trained.unwrap()
}

/// [`train`] on a link the caller keeps; the run's error if it failed.
async fn train_on(
    link: &mut DeviceLink,
    trainer: &mut DeviceTrainer,
    position: RunPosition,
    until: u64,
    checkpoint: &Path,
) -> Result<(Vec<(u64, f32)>, Vec<u64>), RunError> {
    let tokenizer = TextTokenizer::load(&minilm::model_dir(), 32).unwrap();
    let config = RunConfig {
        start_step: position.start_step,
        checkpoint_every: EVERY,
        ..run_config(until)
    };
    let mut saved = Vec::new();
    let report = run::run(
        link,
        trainer,
        &tokenizer,
        &tiny_data(),
        config,
        |_| {},
        |trainer, done| {
            if done % EVERY == 0 || done == STEPS {
                trainer.save_checkpoint(checkpoint, position.run, done)?;
                saved.push(done);
            }
            Ok(())
        },
    )
    .await?;
    let losses = report.steps.iter().map(|s| (s.step, s.loss)).collect();
    Ok((losses, saved))
}

/// The whole run on a cloud of its own, never interrupted: each step's loss.
async fn uninterrupted(dir: &Path) -> Vec<(u64, f32)> {
    let cloud = cloud(&dir.join("pki-ref"), &dir.join("tops-ref"), None).await;
    let position = RunPosition::fresh(EVERY);
    let (losses, _) = train(
        &cloud,
        &mut device(),
        position,
        STEPS,
        &dir.join("ref.ckpt"),
    )
    .await;
    cloud.shutdown().await;
    assert_eq!(losses.len(), STEPS as usize);
    losses
}

/// Asserts `got`'s losses are the uninterrupted run's at the same steps.
fn assert_same_losses(got: &[(u64, f32)], expected: &[(u64, f32)]) {
    for &(step, loss) in got {
        let want = expected[step as usize].1;
        assert!(
            (loss - want).abs() <= 1e-4 * want.abs().max(1.0),
            "step {step}: loss {loss}, uninterrupted {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_device_resumes_its_run_on_a_restarted_cloud_without_training_twice() {
    let Some(Start {
        _turn,
        dir,
        checkpoint,
        expected,
    }) = Start::new("split-resume").await
    else {
        return;
    };

    // The device dies after training step 4 (the fifth) and before its next checkpoint:
    // the cloud's top has trained one step past the device's last checkpoint (4).
    let pki = dir.join("pki");
    let first_cloud = cloud(&pki, &dir.join("tops"), None).await;
    let position = RunPosition::fresh(EVERY);
    let (before, saved) = train(&first_cloud, &mut device(), position, 5, &checkpoint).await;
    assert_eq!(saved, [2, 4]);
    assert_eq!(before.len(), 5);
    // ... and the cloud is redeployed meanwhile: only its snapshots survive.
    first_cloud.shutdown().await;
    let cloud = cloud(&pki, &dir.join("tops"), anywhere()).await;

    // A resume the cloud has no top for is refused with its reason, before any step.
    let mut resumed_device = device();
    let refused = connect(
        &cloud,
        &resumed_device,
        RunPosition::resumed(position.run, 3, EVERY),
    )
    .await;
    match refused.err() {
        Some(LinkError::Refused(TransportError::ResumeRefused(reason))) => {
            assert!(reason.contains("at step 3"), "{reason}")
        }
        other => panic!("expected a ResumeRefused refusal, got {other:?}"),
    }

    // A device whose steps would take other reviews cannot continue the run.
    let mut other = trainer_of(DeviceSetup {
        batch_size: 8,
        ..setup(Mode::TrainBottom, "lowrank:r=4,bits=8", STEPS)
    });
    match other.resume(&checkpoint) {
        Err(DeviceError::ForeignCheckpoint { .. }) => {}
        other => panic!("a resume with other batches must be refused, got {other:?}"),
    }

    // The restarted device continues from its checkpoint at step 4.
    let (run, start) = resumed_device
        .resume(&checkpoint)
        .unwrap()
        .expect("a checkpoint");
    assert_eq!((run, start), (position.run, 4));
    let resumed = RunPosition::resumed(run, start, EVERY);
    assert_ne!(resumed.process, position.process);
    let (after, saved) = train(&cloud, &mut resumed_device, resumed, STEPS, &checkpoint).await;
    cloud.shutdown().await;
    assert_eq!(saved, [6]);

    // Steps 0-3 of the first process and 4-5 of the resumed one are the uninterrupted
    // run, loss for loss: had either side trained step 4 twice, kept its state past the
    // checkpoint or lost its optimizer or codec state, steps 4 and 5 would differ.
    let mut combined: Vec<(u64, f32)> = before[..4].to_vec();
    combined.extend(&after);
    assert_eq!(
        combined.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..STEPS).collect::<Vec<_>>()
    );
    assert_same_losses(&combined, &expected);
    // The interrupted step itself was trained: its loss then equals the resumed one's.
    assert!((before[4].1 - after[0].1).abs() <= 1e-4 * after[0].1.max(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reconnecting_to_a_restarted_cloud_continues_only_where_the_top_was_snapshotted() {
    let Some(Start {
        _turn,
        dir,
        checkpoint,
        expected,
    }) = Start::new("split-cloud-restart").await
    else {
        return;
    };
    let (pki, tops) = (dir.join("pki"), dir.join("tops"));
    let restart = |old: Cloud| async {
        let addr = old.addr;
        old.shutdown().await;
        cloud(&pki, &tops, Some(addr)).await
    };

    // Steps 0-3 (snapshots and checkpoints at 2 and 4), then the cloud restarts in place
    // under the running device.
    let first = cloud(&pki, &tops, None).await;
    let mut trainer = device();
    let position = RunPosition::fresh(EVERY);
    let mut link = connect(&first, &trainer, position).await.unwrap();
    let (before, _) = train_on(&mut link, &mut trainer, position, 4, &checkpoint)
        .await
        .unwrap();
    let second = restart(first).await;

    // The device reconnects at step 4, where the cloud snapshotted: the restarted cloud
    // gives it that top, and step 4 is the uninterrupted run's step 4 (a top from the
    // process's start, step 0, would differ).
    let at = |step| RunPosition {
        start_step: step,
        ..position
    };
    let (at_four, _) = train_on(&mut link, &mut trainer, at(4), 5, &checkpoint)
        .await
        .unwrap();
    assert_eq!(at_four.iter().map(|s| s.0).collect::<Vec<_>>(), [4]);
    assert_same_losses(&before, &expected);
    assert_same_losses(&at_four, &expected);

    // Restarted again at step 5, past the last snapshot: the reconnect is refused with
    // its reason rather than served a top that is not at step 5.
    let third = restart(second).await;
    match train_on(&mut link, &mut trainer, at(5), STEPS, &checkpoint).await {
        Err(RunError::Link(LinkError::Refused(TransportError::ResumeRefused(reason)))) => {
            assert!(reason.contains("at step 5"), "{reason}")
        }
        other => panic!(
            "expected a ResumeRefused refusal at step 5, got {:?}",
            other.map(|r| r.0)
        ),
    }
    drop(link);

    // The device restarts from its checkpoint at step 4 and finishes the run.
    let mut resumed_device = device();
    let (run, start) = resumed_device
        .resume(&checkpoint)
        .unwrap()
        .expect("a checkpoint");
    assert_eq!((run, start), (position.run, 4));
    let resumed = RunPosition::resumed(run, start, EVERY);
    let (after, _) = train(&third, &mut resumed_device, resumed, STEPS, &checkpoint).await;
    third.shutdown().await;
    assert_eq!(after.last().map(|s| s.0), Some(STEPS - 1));
    assert_same_losses(&after, &expected);
}

/// Issue 30 (leftover): a device whose reconnect is refused because the restarted cloud
/// holds no top at its step goes back to its checkpoint in-process (a new process
/// number, the step its checkpoint holds) and finishes the run from there, loss for loss
/// the uninterrupted run, instead of exiting for its operator to restart it with
/// `--resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refused_at_a_reconnect_reloads_its_checkpoint_and_finishes() {
    use tandem_runtime::model::split::run::RunEvent;
    let Some(Start {
        _turn,
        dir,
        checkpoint,
        expected,
    }) = Start::new("split-reload").await
    else {
        return;
    };
    let (pki, tops) = (dir.join("pki"), dir.join("tops"));
    // Steps 0-4 (checkpoints and top snapshots at 2 and 4), then the cloud restarts in
    // place under the running device: its top is back at step 4, the device at step 5.
    let first = cloud(&pki, &tops, None).await;
    let mut trainer = device();
    let position = RunPosition::fresh(EVERY);
    let mut link = connect(&first, &trainer, position).await.unwrap();
    let (before, _) = train_on(&mut link, &mut trainer, position, 5, &checkpoint)
        .await
        .unwrap();
    let addr = first.addr;
    first.shutdown().await;
    let second = cloud(&pki, &tops, Some(addr)).await;

    let tokenizer = TextTokenizer::load(&minilm::model_dir(), 32).unwrap();
    let config = RunConfig {
        start_step: 5,
        checkpoint_every: EVERY,
        ..run_config(STEPS)
    };
    let mut reloaded = Vec::new();
    let report = run::run_reloading(
        &mut link,
        &mut trainer,
        &tokenizer,
        &tiny_data(),
        config,
        |event| {
            if let RunEvent::Reloaded { step, .. } = event {
                reloaded.push(step);
            }
        },
        |trainer, done| {
            if done % EVERY == 0 || done == STEPS {
                trainer.save_checkpoint(&checkpoint, position.run, done)?;
            }
            Ok(())
        },
        |trainer| {
            let saved = trainer.resume(&checkpoint)?;
            Ok(saved.map(|(run, step)| RunPosition::resumed(run, step, EVERY)))
        },
    )
    .await
    .expect("the run finishes after reloading its checkpoint");
    second.shutdown().await;
    assert_eq!(reloaded, [4]);
    let after: Vec<(u64, f32)> = report.steps.iter().map(|s| (s.step, s.loss)).collect();
    assert_eq!(after.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 5]);
    assert_same_losses(&before, &expected);
    assert_same_losses(&after, &expected);
}
