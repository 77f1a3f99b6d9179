//! The QUIC server loop: accept connections, run the Hello exchange on each.

use crate::app::{CloudApp, HelloOnly};
use crate::hub::{self, HubInput, HubSettings};
use crate::outbox::{Outbox, OutboxLimits};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tandem_runtime::transport::{
    self, Inbound, Received, TransportError, TransportLimits, pki::Pki,
};
use tandem_runtime::wire::{Capabilities, CloseCode, Hello, HelloAck, NodeName, software_name};
use tracing::{Instrument, debug, info, info_span, warn};

/// Counters shared by every connection, for logs and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Session streams refused (a frame over its cap, an unknown or misplaced kind);
    /// their connections stayed up.
    pub refused_streams: AtomicU64,
    /// Session messages handed to the hub.
    pub messages: AtomicU64,
}

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
    held_tensor_bytes: u64,
    stream_deadline: Duration,
    /// Slots of connections between their first packet and their Hello.
    pending_hellos: Arc<tokio::sync::Semaphore>,
    hub: HubSettings,
    outbox: OutboxLimits,
    pki: Pki,
    stats: Arc<ServerStats>,
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
        let identity = pki.cloud_identity()?;
        let endpoint_config = transport::tls::server_endpoint_config(&identity);
        let config = transport::tls::server_config(identity, &pki.ca_cert(), limits)?;
        let bind = |source| ServeError::Bind {
            addr: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind(std::io::Error::other("no async runtime")))?;
        let endpoint =
            quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime).map_err(bind)?;
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
            held_tensor_bytes: limits.held_tensor_bytes,
            stream_deadline: limits.stream_deadline,
            pending_hellos: Arc::new(tokio::sync::Semaphore::new(
                limits
                    .max_pending_hellos
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            hub: HubSettings::default(),
            outbox: OutboxLimits::default(),
            pki: pki.clone(),
            stats: Arc::default(),
        })
    }

    /// Serves devices with `settings` (worker threads, idle release) instead of the
    /// defaults.
    pub fn with_hub(mut self, settings: HubSettings) -> Self {
        self.hub = settings;
        self
    }

    /// Whether the server stops once the application's run is over
    /// ([`HubSettings::stop_when_over`]).
    pub fn stopping_at_run_end(mut self, stop: bool) -> Self {
        self.hub.stop_when_over = stop;
        self
    }

    /// Bounds each device's outbox with `limits` instead of the defaults.
    pub fn with_outbox(mut self, limits: OutboxLimits) -> Self {
        self.outbox = limits;
        self
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Counters, live while serving.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Serves the Hello exchange only, until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        self.serve_app(HelloOnly, shutdown).await;
    }

    /// Serves `app`'s jobs until `shutdown` completes (or, with
    /// [`HubSettings::stop_when_over`], the app's run is over and its devices were told),
    /// then closes every connection with `ShuttingDown` and waits until the endpoint is
    /// idle. Returns the run's last line when the run's end stopped it.
    pub async fn serve_app(
        self,
        app: impl CloudApp,
        shutdown: impl Future<Output = ()>,
    ) -> Option<String> {
        let served = app.capabilities();
        let (hub_tx, hub_rx) = std::sync::mpsc::channel();
        let (to_hub, settings) = (hub_tx.clone(), self.hub);
        let (stop, mut run_over) = tokio::sync::oneshot::channel::<String>();
        let hub = std::thread::Builder::new()
            .name("tandem-hub".into())
            .spawn(move || hub::run(app, settings, (hub_rx, to_hub), stop));
        let hub = match hub {
            Ok(hub) => hub,
            Err(err) => {
                warn!("cannot start the session thread: {err}");
                return None;
            }
        };
        tokio::pin!(shutdown);
        // The hub drops its sender at once unless the server stops at the run's end.
        let (mut watching, mut ended) = (true, None);
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                () = &mut shutdown => break,
                over = &mut run_over, if watching => match over {
                    Ok(line) => {
                        ended = Some(line);
                        break;
                    }
                    Err(_) => {
                        watching = false;
                        continue;
                    }
                },
            };
            // `None` means the endpoint was closed.
            let Some(incoming) = incoming else { break };
            let remote = incoming.remote_address();
            let pending = self.pending_hellos.clone();
            let name = self.name.clone();
            let hello_timeout = self.hello_timeout;
            let pki = self.pki.clone();
            let context = Context {
                hub: hub_tx.clone(),
                outbox: self.outbox,
                served,
                held_tensor_bytes: self.held_tensor_bytes,
                stream_deadline: self.stream_deadline,
                stats: self.stats.clone(),
            };
            tokio::spawn(
                async move {
                    let handled =
                        handle_connection(incoming, name, hello_timeout, &pki, context, pending);
                    match handled.await {
                        Ok(()) => debug!("connection closed"),
                        Err(err) => warn!("connection ended: {}", with_causes(&err)),
                    }
                }
                .instrument(info_span!("device", %remote)),
            );
        }
        if ended.is_some() {
            // The devices are being told the run is over: let their connections close
            // with that line first.
            let grace = tokio::time::Instant::now() + RUN_OVER_GRACE;
            while self.endpoint.open_connections() > 0 && tokio::time::Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        info!("shutting down");
        let code = CloseCode::ShuttingDown;
        self.endpoint
            .close(code.to_varint(), code.reason().as_bytes());
        self.endpoint.wait_idle().await;
        // Every connection task has ended: nothing more reaches the hub.
        let _ = hub_tx.send(HubInput::Shutdown);
        drop(hub_tx);
        let _ = tokio::task::spawn_blocking(move || hub.join()).await;
        ended
    }
}

/// How long a server stopping at the run's end waits for its devices' connections to
/// close with the run's last line.
const RUN_OVER_GRACE: Duration = Duration::from_secs(10);

/// Refused streams of one connection that are each logged; after them, every 1000th.
const LOGGED_REFUSALS: u64 = 10;

/// What a connection task shares with the rest of the server.
struct Context {
    hub: std::sync::mpsc::Sender<HubInput>,
    /// Each device's outbox bounds.
    outbox: OutboxLimits,
    served: Capabilities,
    /// Each connection's budget of tensor bytes held at once.
    held_tensor_bytes: u64,
    /// The time a session stream has for its message (see `Inbound::with_deadline`).
    stream_deadline: Duration,
    stats: Arc<ServerStats>,
}

/// Runs one connection: Hello first, then its session streams until it closes.
/// `pending` holds the slots of admitted connections still without a Hello: one is taken
/// once the handshake and the allowlist have passed (so nobody without a certificate can
/// fill them) and given back when the Hello has come; past the cap the connection is
/// closed at once. The handshake and the Hello together have `hello_timeout`.
async fn handle_connection(
    incoming: quinn::Incoming,
    name: NodeName,
    hello_timeout: Duration,
    pki: &Pki,
    context: Context,
    pending: Arc<tokio::sync::Semaphore>,
) -> Result<(), TransportError> {
    let started = tokio::time::Instant::now();
    let connection = match tokio::time::timeout(hello_timeout, incoming).await {
        Ok(connection) => connection.map_err(TransportError::from_connection)?,
        Err(_) => {
            return Err(TransportError::Protocol(format!(
                "no handshake within {} s",
                hello_timeout.as_secs_f64()
            )));
        }
    };
    // TLS already verified the chain to our CA; the allowlist decides, before any frame.
    let Some(device) = allowed_device(&connection, pki) else {
        CloseCode::NotAllowed.close(&connection);
        return Err(TransportError::Protocol(
            "device certificate not on the allowlist".into(),
        ));
    };
    let Ok(pending) = pending.try_acquire_owned() else {
        let reason = "too many connections are waiting to send their Hello";
        CloseCode::Unserved.close_because(&connection, reason);
        return Err(TransportError::Protocol(reason.into()));
    };
    let first_frame = async {
        let (send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(TransportError::from_connection)?;
        let hello: Hello = transport::read_frame(&mut recv).await?;
        Ok::<_, TransportError>((send, hello))
    };
    let (mut send, hello) =
        match tokio::time::timeout_at(started + hello_timeout, first_frame).await {
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
    drop(pending);
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
    let (reply, admitted) = tokio::sync::oneshot::channel();
    let admit = HubInput::Admit {
        hello: Box::new(hello.clone()),
        reply,
    };
    let verdict = match context.hub.send(admit) {
        Ok(()) => admitted
            .await
            .unwrap_or_else(|_| Err("the cloud is shutting down".into())),
        Err(_) => Err("the cloud is shutting down".into()),
    };
    let admitted = match verdict {
        Ok(admitted) => admitted,
        Err(refused) => {
            let reason = refused.to_string();
            refused.close_code().close_because(&connection, &reason);
            return Err(TransportError::Protocol(format!(
                "refused '{}': {reason}",
                hello.node
            )));
        }
    };
    info!(node = %hello.node, software = %hello.software, version, "hello");
    let session = next_session_id();
    let granted = hello.capabilities.intersection(context.served);
    let ack = HelloAck {
        version,
        peer: name,
        software: software_name("tandem-cloud"),
        capabilities: granted,
        session,
    };
    transport::write_frame(&mut send, &ack).await?;
    // A finished stream after a delivered HelloAck: the device has everything it needs.
    let _ = send.finish();
    // Split steps are read only within the shape the application admitted.
    let inbound = Inbound::cloud(granted, admitted.steps, context.held_tensor_bytes)
        .with_update_bytes(admitted.update_bytes)
        .with_deadline(context.stream_deadline);
    run_session(connection, hello.node, session, inbound, context).await;
    Ok(())
}

/// After HelloAck: a writer task sends what the hub routes to this node; every incoming
/// stream is read (caps checked first) and handed to the hub. A bad stream is stopped
/// alone; the connection keeps working.
async fn run_session(
    connection: quinn::Connection,
    node: NodeName,
    id: u64,
    inbound: Inbound,
    context: Context,
) {
    let (outbox, writer) = Outbox::start(connection.clone(), context.outbox);
    let connected = HubInput::Connected {
        node: node.clone(),
        id,
        outbox,
    };
    if context.hub.send(connected).is_err() {
        writer.abort();
        return;
    }
    // Refusals of this connection, so a device that sends nothing else cannot flood the
    // log: the first few are logged, then one line per thousand.
    let refusals = Arc::new(AtomicU64::new(0));
    loop {
        let recv = match connection.accept_uni().await {
            Ok(recv) => recv,
            Err(reason) => {
                debug!("device left: {reason}");
                break;
            }
        };
        let hub = context.hub.clone();
        let stats = context.stats.clone();
        let node = node.clone();
        let inbound = inbound.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            match transport::receive_envelope(recv, &inbound).await {
                Received::Message(envelope, held) => {
                    stats.messages.fetch_add(1, Ordering::Relaxed);
                    let _ = hub.send(HubInput::Message {
                        node,
                        envelope,
                        held,
                    });
                }
                Received::Refused(err) => {
                    stats.refused_streams.fetch_add(1, Ordering::Relaxed);
                    let refused = refusals.fetch_add(1, Ordering::Relaxed) + 1;
                    if refused <= LOGGED_REFUSALS || refused.is_multiple_of(1000) {
                        warn!(%node, refused, "refused a stream: {}", with_causes(&err));
                    }
                }
                Received::ConnectionGone => {}
            }
        });
    }
    writer.abort();
    let _ = context.hub.send(HubInput::Disconnected { node, id });
}

/// `err` and each error under it, `outer: inner: ...`, so a refusal's log line says
/// what exactly was wrong ("invalid frame from peer: bad magic ...").
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut said = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        said.push_str(": ");
        said.push_str(&inner.to_string());
        cause = inner.source();
    }
    said
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
