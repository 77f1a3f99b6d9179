//! Device <-> cloud over loopback QUIC: the Hello exchange, and the ways it must fail.

use std::time::Duration;
use tandem_runtime::transport::{
    self, TransportError, TransportLimits,
    pki::Pki,
    tls::{self, Identity},
};
use tandem_runtime::wire::{CloseCode, Hello, HelloAck, SoftwareName};

mod common;

use common::{Cloud, device_endpoint, endpoint, node, temp_dir};

#[tokio::test]
async fn hello_round_trip_over_loopback() {
    let dir = temp_dir("ok");
    let cloud = Cloud::start(&dir).await;
    let endpoint = device_endpoint(&cloud, "pi-test");
    for _ in 0..3 {
        let report = transport::hello(&endpoint, cloud.addr, "tandem-cloud", &node("pi-test"))
            .await
            .expect("hello succeeds");
        assert_eq!(report.version, tandem_runtime::wire::PROTOCOL_VERSION);
        assert_eq!(report.peer, "test-cloud");
        assert!(
            report.software.starts_with("tandem-cloud "),
            "{}",
            report.software
        );
        assert!(report.round_trip > Duration::ZERO);
        assert!(report.round_trip < Duration::from_secs(5));
    }
    endpoint.wait_idle().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn foreign_cloud_certificate_is_refused_by_the_device() {
    let dir = temp_dir("foreign-cloud");
    let cloud = Cloud::start(&dir.join("cloud")).await;
    let other = Pki::new(dir.join("other"));
    other.init().unwrap();
    // The device trusts another CA: the cloud's certificate does not verify.
    let endpoint = endpoint(&other.ca_cert(), cloud.device("pi"), cloud.addr);
    let err = transport::hello(&endpoint, cloud.addr, "tandem-cloud", &node("pi"))
        .await
        .expect_err("a cloud certificate from another CA must be refused");
    assert!(matches!(err, TransportError::Connection(_)), "{err:?}");
    cloud.shutdown().await;
}

/// Asserts the cloud refuses `endpoint`'s device: in the TLS handshake (bad or missing
/// certificate) or, with `NotAllowed`, right after it (allowlist, name mismatch).
async fn assert_refused(cloud: &Cloud, endpoint: &quinn::Endpoint, name: &str, not_allowed: bool) {
    let result = transport::hello(endpoint, cloud.addr, "tandem-cloud", &node(name)).await;
    let err = result.expect_err("the cloud must refuse this device");
    if not_allowed {
        assert!(
            matches!(err, TransportError::Closed(CloseCode::NotAllowed)),
            "{err:?}"
        );
    } else {
        assert!(matches!(err, TransportError::Connection(_)), "{err:?}");
    }
}

#[tokio::test]
async fn devices_without_a_valid_allowlisted_certificate_are_refused() {
    let dir = temp_dir("mtls");
    let cloud = Cloud::start(&dir.join("cloud")).await;

    // A certificate from a foreign CA.
    let other = Pki::new(dir.join("other"));
    other.init().unwrap();
    let foreign = other.issue("pi-foreign").unwrap();
    let identity = Identity::load(&foreign.cert, &foreign.key).unwrap();
    assert_refused(
        &cloud,
        &endpoint(&cloud.pki.ca_cert(), identity, cloud.addr),
        "pi-foreign",
        false,
    )
    .await;

    // A certificate from the right CA whose name was taken off the allowlist.
    let removed = cloud.device("pi-removed");
    let list = std::fs::read_to_string(cloud.pki.allowlist_path()).unwrap();
    let kept: String = list
        .lines()
        .filter(|l| !l.starts_with("pi-removed "))
        .flat_map(|l| [l, "\n"])
        .collect();
    std::fs::write(cloud.pki.allowlist_path(), kept).unwrap();
    assert_refused(
        &cloud,
        &endpoint(&cloud.pki.ca_cert(), removed, cloud.addr),
        "pi-removed",
        true,
    )
    .await;

    // A valid certificate whose Hello claims another device's name.
    let liar = device_endpoint(&cloud, "pi-liar");
    cloud.device("pi-victim");
    assert_refused(&cloud, &liar, "pi-victim", true).await;

    // Still serving the well-behaved.
    let good = device_endpoint(&cloud, "pi-good");
    transport::hello(&good, cloud.addr, "tandem-cloud", &node("pi-good"))
        .await
        .expect("served");
    cloud.shutdown().await;
}

#[tokio::test]
async fn device_without_a_client_certificate_is_refused() {
    let dir = temp_dir("nocert");
    let cloud = Cloud::start(&dir).await;
    // A raw rustls client that offers no certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certificates(&cloud.pki.ca_cert(), "CA").unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![transport::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap();
    let endpoint = transport::client_endpoint(
        cloud.addr,
        quinn::ClientConfig::new(std::sync::Arc::new(quic)),
    )
    .unwrap();
    assert_refused(&cloud, &endpoint, "pi", false).await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    let dir = temp_dir("name");
    let cloud = Cloud::start(&dir).await;
    let endpoint = device_endpoint(&cloud, "pi");
    let err = transport::hello(&endpoint, cloud.addr, "evil.example", &node("pi"))
        .await
        .expect_err("the certificate is not for evil.example");
    assert!(matches!(err, TransportError::Connection(_)), "{err:?}");
    cloud.shutdown().await;
}

/// Opens a connection and sends raw bytes as the first stream; returns what reading the
/// answer produced.
async fn send_raw_first_frame(cloud: &Cloud, bytes: &[u8]) -> Result<HelloAck, TransportError> {
    let endpoint = device_endpoint(cloud, "pi-raw");
    let connection = endpoint
        .connect(cloud.addr, "tandem-cloud")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        transport::read_frame::<HelloAck>(&mut recv),
    )
    .await
    .expect("the cloud answers or closes within 5 s")
}

#[tokio::test]
async fn no_common_version_is_a_typed_close() {
    let dir = temp_dir("version");
    let cloud = Cloud::start(&dir).await;
    let future = Hello {
        min_version: 7,
        max_version: 9,
        ..Hello::probe(
            node("pi-raw"),
            SoftwareName::try_from("tandem 9.0.0").unwrap(),
        )
    };
    let frame = tandem_runtime::wire::encode_frame(&future).unwrap();
    let err = send_raw_first_frame(&cloud, &frame).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Closed(CloseCode::UnsupportedVersion)),
        "{err:?}"
    );
    cloud.shutdown().await;
}

#[tokio::test]
async fn garbage_first_frame_is_a_protocol_violation_and_others_keep_working() {
    let dir = temp_dir("garbage");
    let cloud = Cloud::start(&dir).await;
    let err = send_raw_first_frame(&cloud, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Closed(CloseCode::ProtocolViolation)),
        "{err:?}"
    );

    // An oversized length in an otherwise valid header: refused before any allocation.
    let mut header = tandem_runtime::wire::FrameHeader::new(tandem_runtime::wire::Kind::Hello, 0)
        .unwrap()
        .to_bytes();
    header[12..16].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let err = send_raw_first_frame(&cloud, &header).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Closed(CloseCode::FrameTooLarge)),
        "{err:?}"
    );

    // The misbehaving devices did not disturb a well-behaved one.
    let endpoint = device_endpoint(&cloud, "good");
    transport::hello(&endpoint, cloud.addr, "tandem-cloud", &node("good"))
        .await
        .expect("a well-behaved device is still served");
    cloud.shutdown().await;
}

#[tokio::test]
async fn silent_device_is_closed_after_the_hello_timeout() {
    let dir = temp_dir("silent");
    let limits = TransportLimits {
        hello_timeout: Duration::from_millis(300),
        ..TransportLimits::default()
    };
    let cloud = Cloud::start_with(&dir, &limits, tandem_cloud::HelloOnly).await;
    let endpoint = device_endpoint(&cloud, "pi-silent");
    let connection = endpoint
        .connect(cloud.addr, "tandem-cloud")
        .unwrap()
        .await
        .unwrap();
    // Keep-alives flow, but no Hello: the cloud must hang up with a protocol violation.
    let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("the cloud closes a silent connection");
    let err = TransportError::from_connection(closed);
    assert!(
        matches!(err, TransportError::Closed(CloseCode::ProtocolViolation)),
        "{err:?}"
    );
    cloud.shutdown().await;
}

/// A cloud killed outright (no CONNECTION_CLOSE sent) and started again on its address
/// with the same identity answers its old connections with stateless resets the devices
/// can verify, so they reconnect at once rather than after the idle timeout.
#[test]
fn a_cloud_restarted_in_place_resets_the_connections_of_its_killed_process() {
    let dir = temp_dir("restart-reset");
    Pki::new(&*dir).init().unwrap();
    // Each cloud process is a runtime of its own; dropping it drops every task and the
    // socket without a word to the peers, as kill -9 does.
    let serve = |addr: std::net::SocketAddr| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let bound = runtime.block_on(async {
            let limits = TransportLimits::default();
            let server = tandem_cloud::Server::bind(addr, &Pki::new(&*dir), "test-cloud", &limits)
                .expect("bind");
            let bound = server.local_addr().unwrap();
            tokio::spawn(server.serve_app(tandem_cloud::HelloOnly, std::future::pending()));
            bound
        });
        (runtime, bound)
    };
    let (killed, addr) = serve("127.0.0.1:0".parse().unwrap());
    let device = tokio::runtime::Runtime::new().unwrap();
    let pki = Pki::new(&*dir);
    let files = pki.issue("pi-reset").unwrap();
    let connection = device.block_on(async {
        let identity = Identity::load(&files.cert, &files.key).unwrap();
        let endpoint = endpoint(&pki.ca_cert(), identity, addr);
        endpoint
            .connect(addr, transport::DEFAULT_SERVER_NAME)
            .unwrap()
            .await
            .expect("handshake")
    });
    drop(killed);
    let (_restarted, _) = serve(addr);
    // The device sends (as a device's link does, and its keep-alives every 5 s); the
    // idle timeout is far longer than the wait.
    let limits = TransportLimits::default();
    assert!(limits.idle_timeout > Duration::from_secs(15));
    let closed = device.block_on(async {
        if let Ok(mut send) = connection.open_uni().await {
            let _ = send.write_all(&[0; 64]).await;
        }
        tokio::time::timeout(Duration::from_secs(12), connection.closed()).await
    });
    assert!(
        matches!(closed, Ok(quinn::ConnectionError::Reset)),
        "{closed:?}"
    );
}

/// One connection per device: a second connection of the same device, once its Hello is
/// answered, replaces the first, which the cloud closes with the reason (a flood of
/// connections under one identity holds one session, not thousands).
#[tokio::test]
async fn a_newer_connection_of_a_device_replaces_its_older_one() {
    let dir = temp_dir("replaced");
    let cloud = Cloud::start(&dir).await;
    let endpoint = device_endpoint(&cloud, "pi-twice");
    let hello = Hello::probe(
        node("pi-twice"),
        SoftwareName::try_from("tandem 0.1.0").unwrap(),
    );
    let open = || transport::open_session(&endpoint, cloud.addr, "tandem-cloud", &hello);
    let first = open().await.expect("first session");
    let second = open().await.expect("second session");
    let closed = tokio::time::timeout(Duration::from_secs(5), first.connection.closed())
        .await
        .expect("the older connection is closed");
    let quinn::ConnectionError::ApplicationClosed(close) = closed else {
        panic!("{closed:?}");
    };
    assert_eq!(
        CloseCode::from_code(close.error_code.into_inner()),
        Some(CloseCode::Unserved)
    );
    assert!(
        String::from_utf8_lossy(&close.reason).contains("newer connection"),
        "{close:?}"
    );
    assert!(
        second.connection.close_reason().is_none(),
        "the newer stays"
    );
    cloud.shutdown().await;
}
