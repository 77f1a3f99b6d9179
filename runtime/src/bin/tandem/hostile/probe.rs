//! What a hostile client needs below the device's link: connections under any identity,
//! Hello frames as it pleases, sessions to abuse, and what the cloud did about it.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_runtime::transport::pki::Pki;
use tandem_runtime::transport::tls::{self, Identity};
use tandem_runtime::transport::{self, STREAM_REFUSED, TransportError, TransportLimits};
use tandem_runtime::wire::{Capabilities, CloseCode, Hello, HelloAck, Message, NodeName};

/// Where the attacks go and what an admitted device looks like there.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) peer: SocketAddr,
    pub(super) server_name: String,
    pub(super) ca: PathBuf,
    /// Attack `a` connects as `<prefix>-a`, with that device's certificate in `pki`.
    pub(super) prefix: String,
    pub(super) pki: Pki,
    /// The model name the cloud's task admits.
    pub(super) model: String,
    /// The cut the split attacks ask for.
    pub(super) cut: u8,
}

/// A connection that completed its Hello: the cloud admitted it as a federated device.
pub(super) struct Session {
    pub(super) connection: quinn::Connection,
    /// Kept so the connection's endpoint lives as long as the session.
    _endpoint: quinn::Endpoint,
    pub(super) node: NodeName,
}

impl Session {
    /// Its Join for federated rounds, declaring `num_examples`.
    pub(super) fn join_message(&self, num_examples: u64) -> tandem_runtime::wire::Join {
        tandem_runtime::wire::Join {
            node: self.node.clone(),
            num_examples,
            capabilities: Capabilities::FL,
        }
    }

    /// Sends its Join declaring `num_examples`.
    pub(super) async fn join(&self, num_examples: u64) -> Result<()> {
        let join = tandem_runtime::session::Envelope::Join(self.join_message(num_examples));
        transport::send_envelope(&self.connection, &join).await?;
        Ok(())
    }
}

impl Target {
    /// The device name attack `attack` uses.
    pub(super) fn node(&self, attack: &str) -> Result<NodeName> {
        let name = format!("{}-{attack}", self.prefix);
        NodeName::try_from(name.as_str())
            .map_err(|_| anyhow::anyhow!("node name '{name}' is too long"))
    }

    /// A client endpoint presenting the certificate in `cert` and `key`.
    pub(super) fn endpoint_with(
        &self,
        cert: &Path,
        key: &Path,
        limits: &TransportLimits,
    ) -> Result<quinn::Endpoint> {
        let identity = Identity::load(cert, key)
            .with_context(|| format!("the certificate {}", cert.display()))?;
        let config = tls::client_config(&self.ca, identity, limits)?;
        Ok(transport::client_endpoint(self.peer, config)?)
    }

    /// A client endpoint presenting `node`'s certificate.
    pub(super) fn endpoint(&self, node: &NodeName) -> Result<quinn::Endpoint> {
        self.endpoint_limited(node, &TransportLimits::default())
    }

    /// [`Self::endpoint`] whose transport grants the cloud only `limits` (a device that
    /// takes nothing: no streams).
    pub(super) fn endpoint_limited(
        &self,
        node: &NodeName,
        limits: &TransportLimits,
    ) -> Result<quinn::Endpoint> {
        let files = self.pki.device_files(node);
        if !files.cert.exists() {
            bail!(
                "no certificate for {node} at {}: `tandem-cloud ca issue --node {node}`",
                files.cert.display()
            );
        }
        self.endpoint_with(&files.cert, &files.key, limits)
    }

    /// A QUIC connection (handshake done, nothing sent) on `endpoint`, or how the
    /// attempt ended.
    pub(super) async fn connect(
        &self,
        endpoint: &quinn::Endpoint,
    ) -> Result<quinn::Connection, String> {
        let connecting = endpoint
            .connect(self.peer, &self.server_name)
            .map_err(|err| format!("cannot connect: {err}"))?;
        connecting.await.map_err(|err| describe_close(&err))
    }

    /// The Hello of a federated device `node` for the cloud's model.
    pub(super) fn hello(&self, node: &NodeName) -> Hello {
        let mut hello = transport::link::LinkTarget::new(
            self.peer,
            &self.server_name,
            node.clone(),
            Capabilities::FL,
        )
        .hello;
        hello.model.name = self.model.as_str().try_into().unwrap_or_default();
        hello
    }

    /// An admitted session of `node` on `endpoint`: connected, its Hello answered.
    pub(super) async fn open(
        &self,
        endpoint: &quinn::Endpoint,
        node: &NodeName,
    ) -> Result<quinn::Connection, TransportError> {
        let hello = self.hello(node);
        let session = transport::open_session(endpoint, self.peer, &self.server_name, &hello);
        Ok(session.await?.connection)
    }

    /// A session as the device of attack `attack`: connected and its Hello answered
    /// (not joined to rounds, so a round never waits for it).
    pub(super) async fn session(&self, attack: &str) -> Result<Session> {
        let node = self.node(attack)?;
        let endpoint = self.endpoint(&node)?;
        let connection = self
            .open(&endpoint, &node)
            .await
            .with_context(|| format!("{node} was not admitted"))?;
        Ok(Session {
            connection,
            _endpoint: endpoint,
            node,
        })
    }
}

/// Sends `frame` (a Hello frame, mangled or not) as the connection's first stream: the
/// HelloAck, or what the cloud did instead.
pub(super) async fn send_hello(
    connection: &quinn::Connection,
    frame: &[u8],
) -> Result<HelloAck, String> {
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(frame).await.map_err(std::io::Error::from)?;
        let ack: HelloAck = transport::read_frame(&mut recv).await?;
        Ok::<_, anyhow::Error>(ack)
    };
    match tokio::time::timeout(Duration::from_secs(15), exchange).await {
        Ok(Ok(ack)) => Ok(ack),
        Ok(Err(err)) => Err(closed_within(connection, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| format!("no HelloAck ({err:#})"))),
        Err(_) => Err("no answer within 15 s".into()),
    }
}

/// How `connection` ended, waiting at most `within`; `None` if it is still up.
pub(super) async fn closed_within(
    connection: &quinn::Connection,
    within: Duration,
) -> Option<String> {
    tokio::time::timeout(within, connection.closed())
        .await
        .ok()
        .map(|err| describe_close(&err))
}

/// A closed connection's cause, with tandem's close code by name.
pub(super) fn describe_close(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            match CloseCode::from_code(close.error_code.into_inner()) {
                Some(code) => format!("closed with {code:?} ({reason})"),
                None => format!("closed with code {} ({reason})", close.error_code),
            }
        }
        other => format!("connection ended: {other}"),
    }
}

/// What became of a stream left open after its bytes.
pub(super) enum StreamFate {
    /// The cloud stopped it with [`STREAM_REFUSED`], after this long.
    Refused(Duration),
    /// Stopped with another code, or the stream or connection failed.
    Other(String),
    /// Still open after the wait.
    Open,
}

/// Writes `bytes` on a new stream of `connection`, leaves it open, and waits up to
/// `within` for the cloud to stop it.
pub(super) async fn send_open(
    connection: &quinn::Connection,
    bytes: &[u8],
    within: Duration,
) -> StreamFate {
    let started = Instant::now();
    let mut send = match connection.open_uni().await {
        Ok(send) => send,
        Err(err) => return StreamFate::Other(format!("no stream: {err}")),
    };
    if let Err(err) = send.write_all(bytes).await {
        return match err {
            quinn::WriteError::Stopped(code) if code == STREAM_REFUSED.into() => {
                StreamFate::Refused(started.elapsed())
            }
            other => StreamFate::Other(format!("write failed: {other}")),
        };
    }
    match tokio::time::timeout(within, send.stopped()).await {
        Ok(Ok(Some(code))) if code == STREAM_REFUSED.into() => {
            StreamFate::Refused(started.elapsed())
        }
        Ok(Ok(Some(code))) => StreamFate::Other(format!("stopped with code {code}")),
        Ok(Ok(None)) => StreamFate::Other("read to its end".into()),
        Ok(Err(err)) => StreamFate::Other(format!("stream lost: {err}")),
        Err(_) => StreamFate::Open,
    }
}

/// The bytes of a frame of `msg`'s kind whose header says `len` (any value, even past
/// the kind's cap or the message's real size), followed by nothing.
pub(super) fn header_claiming<M: Message>(len: u32) -> Vec<u8> {
    // A real header of the kind, its length field overwritten.
    let mut header = tandem_runtime::wire::FrameHeader::new(M::KIND, 0)
        .map(|h| h.to_bytes().to_vec())
        .unwrap_or_default();
    if header.len() == tandem_runtime::wire::HEADER_LEN {
        header[12..16].copy_from_slice(&len.to_le_bytes());
    }
    header
}

/// Milliseconds of `d`, for the report.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
