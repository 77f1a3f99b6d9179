//! A federated run has an end (issue 31): once its last round is committed the cloud
//! closes every joined device with `Normal` and the run's last line, after the round's
//! result; a device that joins afterwards (a late one, or one restarted) hears the same
//! at once; and a cloud told to stop at the end (`serve --app fl` without
//! `--keep-serving`) stops serving by itself.

mod common;

use common::{Cloud, link_target, node, quick_link, round_task};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tandem_cloud::{CloudApp, HubSettings, RoundJob, RoundOutcome};
use tandem_runtime::session::fl::{Assignment, RoundClient};
use tandem_runtime::transport::TransportError;
use tandem_runtime::transport::link::{DeviceLink, LinkError};
use tandem_runtime::wire::{Capabilities, Join, NodeName};

/// One round, then the run is over.
struct OneRound {
    committed: Arc<AtomicBool>,
}

const OVER: &str = "the run is over: 1 round committed";

impl CloudApp for OneRound {
    fn capabilities(&self) -> Capabilities {
        Capabilities::FL
    }

    fn round_tasks(&mut self, round: u64, participants: &[NodeName]) -> Option<Vec<Assignment>> {
        (round == 1).then(|| Assignment::same_for_all(&round_task(round, 4), &[0; 4], participants))
    }

    fn round_job(&mut self, outcome: RoundOutcome) -> RoundJob {
        let committed = self.committed.clone();
        let done = matches!(outcome, RoundOutcome::Committed { .. });
        Box::new(move || committed.store(done, Ordering::Release))
    }

    fn run_over(&self) -> Option<String> {
        self.committed
            .load(Ordering::Acquire)
            .then(|| OVER.to_string())
    }
}

async fn joined(cloud: &Cloud, name: &str) -> DeviceLink {
    let mut link = quick_link(
        cloud,
        link_target(cloud, name, Capabilities::FL),
        Duration::from_secs(5),
    )
    .await;
    link.join(Join {
        node: node(name),
        num_examples: 10,
        capabilities: Capabilities::FL,
    })
    .await
    .expect("joined");
    link
}

/// Takes part in rounds until one ends; `Err` when the link ends instead.
async fn round(link: &mut DeviceLink, name: &str) -> Result<Option<bool>, LinkError> {
    let mut machine = RoundClient::new(Duration::from_secs(5));
    let node = node(name);
    let result = link
        .run_round(&mut machine, |task, _| {
            common::zero_update(&node, task.round)
        })
        .await?;
    Ok(result.map(|r| r.committed))
}

/// The link ended with the run's last line, within a few seconds.
async fn hears_the_end(link: &mut DeviceLink, name: &str) {
    match tokio::time::timeout(Duration::from_secs(10), round(link, name)).await {
        Ok(Err(LinkError::Refused(TransportError::Finished(line)))) => {
            assert_eq!(line, OVER)
        }
        other => panic!("{name}: expected the run's end, got {other:?}"),
    }
}

#[tokio::test]
async fn devices_hear_the_run_is_over_after_its_last_round_and_so_do_late_ones() {
    let app = OneRound {
        committed: Arc::default(),
    };
    let cloud = Cloud::start_with_hub("fl-run-end", HubSettings::default(), app).await;
    let mut a = joined(&cloud, "a").await;
    // The last round's result first, then the end.
    assert_eq!(round(&mut a, "a").await.unwrap(), Some(true));
    hears_the_end(&mut a, "a").await;
    // A device joining after the end (late, or restarted) hears it at once.
    let mut late = joined(&cloud, "late").await;
    hears_the_end(&mut late, "late").await;
    let mut again = joined(&cloud, "a").await;
    hears_the_end(&mut again, "a").await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_cloud_told_to_stop_at_the_end_stops_serving_by_itself() {
    let app = OneRound {
        committed: Arc::default(),
    };
    let hub = HubSettings {
        stop_when_over: true,
        ..HubSettings::default()
    };
    let cloud = Cloud::start_with_hub("fl-run-end-stop", hub, app).await;
    let mut a = joined(&cloud, "a").await;
    assert_eq!(round(&mut a, "a").await.unwrap(), Some(true));
    hears_the_end(&mut a, "a").await;
    assert_eq!(cloud.ended().await.as_deref(), Some(OVER));
}
