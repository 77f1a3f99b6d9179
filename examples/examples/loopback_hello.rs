//! A cloud peer and a device in one process, talking QUIC over loopback.
//!
//! Run with `cargo run -p tandem-examples --example loopback_hello`. It creates a
//! throw-away CA in a temporary directory, issues a device certificate, starts a
//! `tandem-cloud` server on a free port, says hello from the device three times over
//! mutual TLS and prints each round trip.

use anyhow::{Context, Result};
use tandem_cloud::Server;
use tandem_runtime::transport::{self, TransportLimits, pki::Pki, tls};
use tandem_runtime::wire::NodeName;

#[tokio::main]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tandem-example-{}", std::process::id()));
    let pki = Pki::new(&dir);
    pki.init()?;
    let device = pki.issue("example-device")?;
    let limits = TransportLimits::default();

    // The cloud half: bind an ephemeral loopback port and serve until told to stop.
    let server = Server::bind("127.0.0.1:0".parse()?, &pki, "example-cloud", &limits)?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cloud = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    // The device half: trust the cloud's CA, present the device certificate, say hello.
    let identity = tls::Identity::load(&device.cert, &device.key)?;
    let config = tls::client_config(&pki.ca_cert(), identity, &limits)?;
    let endpoint = transport::client_endpoint(addr, config)?;
    let node =
        NodeName::try_from("example-device").map_err(|_| anyhow::anyhow!("name too long"))?;
    for attempt in 1..=3 {
        let report = transport::hello(&endpoint, addr, transport::DEFAULT_SERVER_NAME, &node)
            .await
            .context("hello failed")?;
        println!(
            "hello {attempt}: {} speaks protocol {}, round trip {:.3} ms",
            report.peer,
            report.version,
            report.round_trip.as_secs_f64() * 1e3
        );
    }
    endpoint.wait_idle().await;
    let _ = stop.send(());
    cloud.await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
