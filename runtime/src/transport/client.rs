//! The device side of the Hello exchange.

use super::{TransportError, read_frame, write_frame};
use crate::wire::{
    CloseCode, Hello, HelloAck, MIN_PROTOCOL_VERSION, NodeName, PROTOCOL_VERSION, software_name,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a successful Hello exchange learned.
#[derive(Clone, Debug)]
pub struct HelloReport {
    /// The cloud peer's name.
    pub peer: String,
    /// The cloud's software and version.
    pub software: String,
    /// The protocol version agreed on.
    pub version: u16,
    /// QUIC + TLS handshake time.
    pub handshake: Duration,
    /// Application round trip: Hello sent -> HelloAck received, on an open connection.
    pub round_trip: Duration,
    /// quinn's smoothed RTT estimate after the exchange.
    pub quic_rtt: Duration,
}

/// A client endpoint bound to an ephemeral port of the same address family as `peer`.
pub fn client_endpoint(
    peer: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Endpoint, TransportError> {
    let bind: SocketAddr = if peer.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// An open connection whose Hello exchange succeeded: session messages may flow.
pub struct OpenSession {
    /// The connection.
    pub connection: quinn::Connection,
    /// The cloud's answer (its `session` id, the version agreed on).
    pub ack: HelloAck,
    /// What the exchange measured.
    pub report: HelloReport,
}

/// Connects to `peer`, sends [`Hello`] and waits for [`HelloAck`]. Closes the connection
/// cleanly afterwards.
///
/// The caller bounds the total time (e.g. with `tokio::time::timeout`): an unreachable
/// peer otherwise takes the idle timeout to fail.
pub async fn hello(
    endpoint: &quinn::Endpoint,
    peer: SocketAddr,
    server_name: &str,
    node: &NodeName,
) -> Result<HelloReport, TransportError> {
    let probe = Hello::probe(node.clone(), software_name("tandem"));
    let session = open_session(endpoint, peer, server_name, &probe).await?;
    CloseCode::Normal.close(&session.connection);
    Ok(session.report)
}

/// Connects to `peer`, sends `hello` (its node must match the device certificate) and
/// waits for HelloAck, leaving the connection open. On a bad HelloAck the connection is
/// closed with the matching code.
pub async fn open_session(
    endpoint: &quinn::Endpoint,
    peer: SocketAddr,
    server_name: &str,
    hello: &Hello,
) -> Result<OpenSession, TransportError> {
    let start = Instant::now();
    let connection = endpoint
        .connect(peer, server_name)?
        .await
        .map_err(TransportError::from_connection)?;
    let handshake = start.elapsed();
    tracing::debug!(%peer, handshake_ms = handshake.as_secs_f64() * 1e3, "connected");

    let sent = Instant::now();
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(TransportError::from_connection)?;
    let exchange = async {
        write_frame(&mut send, hello).await?;
        let ack: HelloAck = read_frame(&mut recv).await?;
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&ack.version) {
            return Err(TransportError::Protocol(format!(
                "cloud chose protocol version {} outside {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}",
                ack.version
            )));
        }
        Ok(ack)
    };
    let result = exchange.await;
    let round_trip = sent.elapsed();
    let ack = match result {
        Ok(ack) => ack,
        Err(err) => {
            // Tell the cloud why we leave: a bad HelloAck is the cloud's protocol violation.
            let code = match &err {
                TransportError::Wire(wire) => CloseCode::from(wire),
                _ => CloseCode::ProtocolViolation,
            };
            code.close(&connection);
            return Err(err);
        }
    };
    let report = HelloReport {
        peer: ack.peer.to_string(),
        software: ack.software.to_string(),
        version: ack.version,
        handshake,
        round_trip,
        quic_rtt: connection.rtt(),
    };
    Ok(OpenSession {
        connection,
        ack,
        report,
    })
}
