//! The QUIC server loop: accept connections, run the Hello exchange on each.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tandem_runtime::transport::{self, TransportError, TransportLimits, pki::Pki};
use tandem_runtime::wire::{Capabilities, CloseCode, Hello, HelloAck, NodeName, software_name};
use tracing::{Instrument, debug, info, info_span, warn};

/// The jobs this server runs today: none yet beyond the Hello exchange (split and FL
/// sessions arrive with their issues).
const SERVED: Capabilities = Capabilities::NONE;

/// A random session id (64 bits from the OS generator): a device resuming a session
/// must also present the certificate of the node it was issued to.
fn next_session_id() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The OS generator failing is exceptional; a zero id then still works for a
    // connection that never resumes.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The certificate or TLS configuration was refused.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The UDP socket could not be bound (port in use, address not local, ...).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound cloud endpoint.
pub struct Server {
    endpoint: quinn::Endpoint,
    name: NodeName,
    hello_timeout: Duration,
    pki: Pki,
}

impl Server {
    /// Binds `listen` with the cloud identity of `pki`, accepting devices whose
    /// certificates chain to its CA and whose names are on its allowlist. `name` is sent
    /// to devices in HelloAck (truncated to 64 bytes).
    pub fn bind(
        listen: SocketAddr,
        pki: &Pki,
        name: &str,
        limits: &TransportLimits,
    ) -> Result<Self, ServeError> {
        let config = transport::tls::server_config(pki.cloud_identity()?, &pki.ca_cert(), limits)?;
        let endpoint =
            quinn::Endpoint::server(config, listen).map_err(|source| ServeError::Bind {
                addr: listen,
                source,
            })?;
        let mut short = NodeName::new();
        for c in name.chars() {
            if short.push(c).is_err() {
                break;
            }
        }
        Ok(Self {
            endpoint,
            name: short,
            hello_timeout: limits.hello_timeout,
            pki: pki.clone(),
        })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves until `shutdown` completes, then closes every connection with
    /// `ShuttingDown` and waits until the endpoint is idle.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                () = &mut shutdown => break,
            };
            // `None` means the endpoint was closed.
            let Some(incoming) = incoming else { break };
            let remote = incoming.remote_address();
            let name = self.name.clone();
            let hello_timeout = self.hello_timeout;
            let pki = self.pki.clone();
            tokio::spawn(
                async move {
                    match handle_connection(incoming, name, hello_timeout, &pki).await {
                        Ok(()) => debug!("connection closed"),
                        Err(err) => warn!("connection ended: {err}"),
                    }
                }
                .instrument(info_span!("device", %remote)),
            );
        }
        info!("shutting down");
        let code = CloseCode::ShuttingDown;
        self.endpoint
            .close(code.to_varint(), code.reason().as_bytes());
        self.endpoint.wait_idle().await;
    }
}

/// Runs one connection: Hello first, then (for now) wait for the device to close.
async fn handle_connection(
    incoming: quinn::Incoming,
    name: NodeName,
    hello_timeout: Duration,
    pki: &Pki,
) -> Result<(), TransportError> {
    let connection = incoming.await.map_err(TransportError::from_connection)?;
    // TLS already verified the chain to our CA; the allowlist decides, before any frame.
    let Some(device) = allowed_device(&connection, pki) else {
        CloseCode::NotAllowed.close(&connection);
        return Err(TransportError::Protocol(
            "device certificate not on the allowlist".into(),
        ));
    };
    let first_frame = async {
        let (send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(TransportError::from_connection)?;
        let hello: Hello = transport::read_frame(&mut recv).await?;
        Ok::<_, TransportError>((send, hello))
    };
    let (mut send, hello) = match tokio::time::timeout(hello_timeout, first_frame).await {
        Ok(Ok(first)) => first,
        Ok(Err(err)) => {
            let code = match &err {
                TransportError::Wire(wire) => CloseCode::from(wire),
                _ => CloseCode::ProtocolViolation,
            };
            code.close(&connection);
            return Err(err);
        }
        Err(_) => {
            CloseCode::ProtocolViolation.close(&connection);
            return Err(TransportError::Protocol(format!(
                "no Hello within {} s",
                hello_timeout.as_secs_f64()
            )));
        }
    };
    let Some(version) = hello.negotiate() else {
        CloseCode::UnsupportedVersion.close(&connection);
        return Err(TransportError::Protocol(format!(
            "device '{}' speaks versions {}..={}, no overlap",
            hello.node, hello.min_version, hello.max_version
        )));
    };
    if hello.node.as_str() != device {
        CloseCode::NotAllowed.close(&connection);
        return Err(TransportError::Protocol(format!(
            "certificate of '{device}' sent a Hello as '{}'",
            hello.node
        )));
    }
    info!(node = %hello.node, software = %hello.software, version, "hello");
    let ack = HelloAck {
        version,
        peer: name,
        software: software_name("tandem-cloud"),
        capabilities: hello.capabilities.intersection(SERVED),
        session: next_session_id(),
    };
    transport::write_frame(&mut send, &ack).await?;
    // A finished stream after a delivered HelloAck: the device has everything it needs.
    let _ = send.finish();
    let reason = connection.closed().await;
    debug!("device left: {reason}");
    Ok(())
}

/// The allowlisted name the connection's client certificate is issued for, if any.
fn allowed_device(connection: &quinn::Connection, pki: &Pki) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let allowlist = match pki.allowlist() {
        Ok(list) => list,
        Err(err) => {
            warn!("cannot read the allowlist: {err}");
            return None;
        }
    };
    transport::pki::allowed_name(chain.first()?, &allowlist)
}
