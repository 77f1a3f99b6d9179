//! Shared loopback fixtures: a cloud with its own CA on an ephemeral port, and devices
//! issued by it.

#![allow(dead_code)] // each test binary uses a different subset

#[cfg(feature = "model")]
pub mod split;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tandem_cloud::{CloudApp, HelloOnly, HubSettings, OutboxLimits, Server, ServerStats};
use tandem_runtime::transport::link::{DeviceLink, LinkTarget, ReconnectPolicy};
use tandem_runtime::transport::{
    self, TransportLimits,
    pki::Pki,
    tls::{self, Identity},
};
use tandem_runtime::wire::{Capabilities, CodecDesc, CutGradient, NodeName};
use tokio::sync::oneshot;

/// A fresh directory for one test's files, removed (with everything in it) when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory for one test's certificates and files.
pub fn temp_dir(test: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("tandem-it-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TempDir(dir)
}

/// A running cloud on an ephemeral loopback port with its own CA.
pub struct Cloud {
    pub addr: SocketAddr,
    pub pki: Pki,
    pub stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    /// The server; it returns the run's last line if it stopped at the run's end.
    task: tokio::task::JoinHandle<Option<String>>,
    /// The certificate directory, where the cloud made it itself.
    _dir: Option<TempDir>,
}

impl Cloud {
    /// A cloud serving the Hello exchange only.
    pub async fn start(dir: &Path) -> Cloud {
        Self::start_with(dir, &TransportLimits::default(), HelloOnly).await
    }

    /// A cloud with these limits serving `app`, its certificates in a temporary directory
    /// named after `test` that lives as long as the cloud.
    pub async fn start_in_temp_dir(
        test: &str,
        limits: &TransportLimits,
        app: impl CloudApp,
    ) -> Cloud {
        let dir = temp_dir(test);
        let mut cloud = Self::start_with(&dir, limits, app).await;
        cloud._dir = Some(dir);
        cloud
    }

    /// A cloud with these limits serving `app`.
    pub async fn start_with(dir: &Path, limits: &TransportLimits, app: impl CloudApp) -> Cloud {
        Pki::new(dir).init().expect("CA");
        Self::restart_at(dir, "127.0.0.1:0".parse().unwrap(), limits, app).await
    }

    /// A cloud serving `app` with the CA already in `dir` (a redeployed cloud: its
    /// devices' certificates stay valid), on `addr` (port 0: any; the same address: a
    /// cloud restarted in place, whose devices reconnect to the address they know).
    pub async fn restart_at(
        dir: &Path,
        addr: SocketAddr,
        limits: &TransportLimits,
        app: impl CloudApp,
    ) -> Cloud {
        Self::launch(dir, addr, limits, HubSettings::default(), app).await
    }

    /// A cloud serving `app` with `hub`'s workers and idle release, its certificates in
    /// a temporary directory named after `test`.
    pub async fn start_with_hub(test: &str, hub: HubSettings, app: impl CloudApp) -> Cloud {
        let dir = temp_dir(test);
        Pki::new(&*dir).init().expect("CA");
        let loopback = "127.0.0.1:0".parse().unwrap();
        let mut cloud = Self::launch(&dir, loopback, &TransportLimits::default(), hub, app).await;
        cloud._dir = Some(dir);
        cloud
    }

    /// A cloud with these limits and outbox bounds serving `app`, its certificates in a
    /// temporary directory named after `test`.
    pub async fn start_with_outbox(
        test: &str,
        limits: &TransportLimits,
        outbox: OutboxLimits,
        app: impl CloudApp,
    ) -> Cloud {
        let dir = temp_dir(test);
        Pki::new(&*dir).init().expect("CA");
        let loopback = "127.0.0.1:0".parse().unwrap();
        let hub = HubSettings::default();
        let mut cloud = Self::launch_with(&dir, loopback, limits, hub, outbox, app).await;
        cloud._dir = Some(dir);
        cloud
    }

    async fn launch(
        dir: &Path,
        addr: SocketAddr,
        limits: &TransportLimits,
        hub: HubSettings,
        app: impl CloudApp,
    ) -> Cloud {
        Self::launch_with(dir, addr, limits, hub, OutboxLimits::default(), app).await
    }

    async fn launch_with(
        dir: &Path,
        addr: SocketAddr,
        limits: &TransportLimits,
        hub: HubSettings,
        outbox: OutboxLimits,
        app: impl CloudApp,
    ) -> Cloud {
        let pki = Pki::new(dir);
        let server = Server::bind(addr, &pki, "test-cloud", limits)
            .expect("bind loopback")
            .with_hub(hub)
            .with_outbox(outbox);
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.serve_app(app, async {
            let _ = stopped.await;
        }));
        Cloud {
            addr,
            pki,
            stats,
            stop: Some(stop),
            task,
            _dir: None,
        }
    }

    /// A device identity issued by this cloud's CA (and allowlisted).
    pub fn device(&self, node: &str) -> Identity {
        let files = self.pki.issue(node).expect("issue");
        Identity::load(&files.cert, &files.key).unwrap()
    }

    /// Stops the cloud: it closes every connection and waits until they have drained
    /// (three probe timeouts of each, QUIC's rule), which under qemu, with round trips
    /// inflated by emulation after a large transfer, took over 5 s once in many runs.
    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("server stops within 20 s")
            .unwrap();
    }
}

impl Cloud {
    /// Waits (20 s at most) for a cloud that stops at the run's end to stop by itself;
    /// the line it ended the run with.
    pub async fn ended(mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the server stops by itself within 20 s")
            .unwrap()
    }
}

pub fn endpoint(ca: &Path, identity: Identity, peer: SocketAddr) -> quinn::Endpoint {
    let config = tls::client_config(ca, identity, &TransportLimits::default()).unwrap();
    transport::client_endpoint(peer, config).unwrap()
}

/// An endpoint for device `node`, issued by and trusting `cloud`.
pub fn device_endpoint(cloud: &Cloud, node: &str) -> quinn::Endpoint {
    endpoint(&cloud.pki.ca_cert(), cloud.device(node), cloud.addr)
}

pub fn node(name: &str) -> NodeName {
    NodeName::try_from(name).unwrap()
}

/// The tests' local training: 2 epochs of SGD, batch 32, lr 0.05, momentum 0.9.
#[cfg(feature = "model")]
pub fn local_sgd() -> tandem_runtime::fl::task::LocalConfig {
    tandem_runtime::fl::task::LocalConfig {
        epochs: 2,
        batch: 32,
        lr: 0.05,
        momentum: 0.9,
        proximal_mu: 0.0,
        max_steps: None,
    }
}

/// `clients` IID slices of 500 Fashion-MNIST training images each (partition seed
/// `seed`) and the first 1,000 test images; None (with a note) where the set-up has not
/// installed the data set, a failure where `CI` is set.
#[cfg(feature = "model")]
pub fn fashion_mnist_clients(
    clients: usize,
    seed: u64,
) -> Option<(
    Vec<tandem_runtime::data::fashion_mnist::Images>,
    tandem_runtime::data::fashion_mnist::Images,
)> {
    use tandem_runtime::data::fashion_mnist::{CLASSES, FashionMnist, IdxError};
    use tandem_runtime::data::partition::Partition;
    let set = match FashionMnist::load(&FashionMnist::default_dir()) {
        Ok(set) => set,
        Err(err @ IdxError::Missing { .. }) => {
            tandem_runtime::paths::skip_missing_cache(err);
            return None;
        }
        Err(err) => panic!("{err}"),
    };
    let first = |n: usize| (0..n).collect::<Vec<_>>();
    let train = set.train.select(&first(clients * 500));
    let parts = Partition::Iid
        .assign(&train.labels, CLASSES, clients, seed)
        .unwrap();
    let slices = parts.iter().map(|p| train.select(p)).collect();
    Some((slices, set.test.select(&first(1000))))
}

/// A test application's answer to a split step: its tensor's bytes reversed as the
/// "gradient", and the tensor's length as the loss.
pub fn reversed_reply(step: u64, tensor: &[u8]) -> (CutGradient, Vec<u8>) {
    let reply: Vec<u8> = tensor.iter().rev().copied().collect();
    let gradient = CutGradient {
        step,
        loss: tensor.len() as f32,
        kept: false,
        codec: CodecDesc::Identity,
        payload_len: reply.len() as u64,
    };
    (gradient, reply)
}

/// A round's task for devices of the loopback tests: identity-coded, a model of
/// `payload_len` bytes, 20 s to report.
pub fn round_task(round: u64, payload_len: u64) -> tandem_runtime::wire::RoundTask {
    use tandem_runtime::wire::{ModelPayload, RoundConfig, RoundTask};
    RoundTask {
        round,
        deadline_ms: 20_000,
        config: RoundConfig {
            local_epochs: 1,
            batch_size: 8,
            lr: 0.1,
            proximal_mu: 0.0,
        },
        model: ModelPayload::Full,
        model_codec: CodecDesc::Identity,
        update_codec: CodecDesc::Identity,
        payload_len,
        factors_len: 0,
    }
}

/// `node`'s update of 4 zero bytes for `round` (identity-coded, 10 examples): the update
/// of a device in the loopback tests' rounds.
pub fn zero_update(node: &NodeName, round: u64) -> Option<(tandem_runtime::wire::Update, Vec<u8>)> {
    let update = tandem_runtime::wire::Update {
        round,
        node: node.clone(),
        num_examples: 10,
        train_loss: 0.0,
        codec: CodecDesc::Identity,
        payload_len: 4,
    };
    Some((update, vec![0; 4]))
}

/// What device `name` asks `cloud` for: `wants`, nothing else said in its Hello.
pub fn link_target(cloud: &Cloud, name: &str, wants: Capabilities) -> LinkTarget {
    LinkTarget::new(
        cloud.addr,
        transport::DEFAULT_SERVER_NAME,
        node(name),
        wants,
    )
}

/// `target`'s link to `cloud`, reconnecting quickly (first retry after 20 ms) and giving
/// up after `give_up_after`.
pub async fn quick_link(cloud: &Cloud, target: LinkTarget, give_up_after: Duration) -> DeviceLink {
    let policy = ReconnectPolicy {
        first_wait: Duration::from_millis(20),
        give_up_after,
        ..ReconnectPolicy::default()
    };
    let name = target.hello.node.clone();
    DeviceLink::connect(device_endpoint(cloud, name.as_str()), target, policy)
        .await
        .expect("link up")
}
