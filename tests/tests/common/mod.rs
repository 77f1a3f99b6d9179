//! Shared loopback fixtures: a cloud with its own CA on an ephemeral port, and devices
//! issued by it.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tandem_cloud::{CloudApp, HelloOnly, Server, ServerStats};
use tandem_runtime::transport::{
    self, TransportLimits,
    pki::Pki,
    tls::{self, Identity},
};
use tandem_runtime::wire::NodeName;
use tokio::sync::oneshot;

/// A fresh directory for one test's certificates.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-it-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A running cloud on an ephemeral loopback port with its own CA.
pub struct Cloud {
    pub addr: SocketAddr,
    pub pki: Pki,
    pub stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cloud {
    /// A cloud serving the Hello exchange only.
    pub async fn start(dir: &Path) -> Cloud {
        Self::start_with(dir, &TransportLimits::default(), HelloOnly).await
    }

    /// A cloud with these limits serving `app`.
    pub async fn start_with(dir: &Path, limits: &TransportLimits, app: impl CloudApp) -> Cloud {
        let pki = Pki::new(dir);
        pki.init().expect("CA");
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), &pki, "test-cloud", limits)
            .expect("bind loopback");
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
        }
    }

    /// A device identity issued by this cloud's CA (and allowlisted).
    pub fn device(&self, node: &str) -> Identity {
        let files = self.pki.issue(node).expect("issue");
        Identity::load(&files.cert, &files.key).unwrap()
    }

    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("server stops within 5 s")
            .unwrap();
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
