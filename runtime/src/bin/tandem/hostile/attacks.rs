//! The attacks of `tandem hostile`, each from its own device identity, each ending in
//! what the cloud did about it.

use super::probe::{
    Session, StreamFate, Target, closed_within, describe_close, header_claiming, ms, send_hello,
    send_open,
};
use anyhow::Result;
use std::path::Path;
use std::time::{Duration, Instant};
use tandem_runtime::session::Envelope;
use tandem_runtime::transport::{self, Inbound, Received, TransportLimits};
use tandem_runtime::wire::{
    Hello, HelloAck, PROTOCOL_VERSION, RoundResult, RoundTask, Update, encode_frame,
};

/// What the cloud did about an attack.
pub(super) enum Verdict {
    /// It refused the attack, as said.
    Refused(String),
    /// Nothing to refuse on the wire, but the cost is bounded, as said.
    Contained(String),
    /// The attacker cannot see the refusal (a stream it finished): the cloud's log
    /// says (it names the attack's device).
    InCloudLog(String),
    /// The cloud took it.
    NotRefused(String),
}

/// How long a refusal may take before the attack counts as not refused.
const WAIT: Duration = Duration::from_secs(5);

/// Garbage bytes on a session stream.
pub(super) async fn garbage_frame(target: &Target) -> Result<Verdict> {
    let session = target.session("garbage-frame").await?;
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(97) ^ 0x5a).collect();
    Ok(stream_verdict(&session, &garbage, "64 garbage bytes").await)
}

/// A whole Join frame's header and half its body, then the stream finished.
pub(super) async fn truncated_frame(target: &Target) -> Result<Verdict> {
    let session = target.session("truncated-frame").await?;
    let frame = encode_frame(&session.join_message(7))?;
    let cut =
        tandem_runtime::wire::HEADER_LEN + (frame.len() - tandem_runtime::wire::HEADER_LEN) / 2;
    let mut send = session.connection.open_uni().await?;
    send.write_all(&frame[..cut]).await?;
    send.finish()?;
    let _ = tokio::time::timeout(WAIT, send.stopped()).await;
    Ok(alive_or(
        &session,
        Verdict::InCloudLog(format!(
            "a Join frame cut after {cut} of its {} bytes",
            frame.len()
        )),
    )
    .await)
}

/// A Hello frame whose header claims u32::MAX bytes.
pub(super) async fn max_length_hello(target: &Target) -> Result<Verdict> {
    let node = target.node("max-length-hello")?;
    let endpoint = target.endpoint(&node)?;
    let frame = header_claiming::<Hello>(u32::MAX);
    Ok(hello_verdict(
        target,
        &endpoint,
        &frame,
        "a Hello header claiming u32::MAX bytes",
    )
    .await)
}

/// A session stream whose Update header claims u32::MAX bytes.
pub(super) async fn max_length_stream(target: &Target) -> Result<Verdict> {
    let session = target.session("max-length-stream").await?;
    let frame = header_claiming::<Update>(u32::MAX);
    Ok(stream_verdict(&session, &frame, "an Update header claiming u32::MAX bytes").await)
}

/// A Hello frame with another schema hash (same version, other messages).
pub(super) async fn schema_mismatch(target: &Target) -> Result<Verdict> {
    let node = target.node("schema-mismatch")?;
    let endpoint = target.endpoint(&node)?;
    let mut frame = encode_frame(&target.hello(&node))?;
    for byte in &mut frame[8..12] {
        *byte ^= 0xa5;
    }
    Ok(hello_verdict(target, &endpoint, &frame, "a Hello of another schema hash").await)
}

/// A Hello that speaks only a protocol version the cloud does not.
pub(super) async fn version_mismatch(target: &Target) -> Result<Verdict> {
    let node = target.node("version-mismatch")?;
    let endpoint = target.endpoint(&node)?;
    let future = PROTOCOL_VERSION.saturating_add(7);
    let hello = Hello {
        min_version: future,
        max_version: future,
        ..target.hello(&node)
    };
    let frame = encode_frame(&hello)?;
    Ok(hello_verdict(
        target,
        &endpoint,
        &frame,
        &format!("a Hello of version {future} only"),
    )
    .await)
}

/// Messages that travel cloud to device (or open a session) sent to the cloud on a
/// session stream, their bodies never sent.
pub(super) async fn wrong_direction(target: &Target) -> Result<Verdict> {
    let session = target.session("wrong-direction").await?;
    let headers = [
        ("RoundTask", header_claiming::<RoundTask>(100)),
        ("RoundResult", header_claiming::<RoundResult>(20)),
        ("HelloAck", header_claiming::<HelloAck>(20)),
        ("Hello", header_claiming::<Hello>(20)),
    ];
    let mut refused = Vec::new();
    for (kind, header) in &headers {
        match send_open(&session.connection, header, WAIT).await {
            StreamFate::Refused(after) => refused.push(format!("{kind} in {:.1} ms", ms(after))),
            StreamFate::Other(what) => return Ok(Verdict::NotRefused(format!("{kind}: {what}"))),
            StreamFate::Open => {
                return Ok(Verdict::NotRefused(format!(
                    "{kind}: still read after {WAIT:?}"
                )));
            }
        }
    }
    Ok(alive_or(
        &session,
        Verdict::Refused(format!(
            "each stream stopped with STREAM_REFUSED: {}",
            refused.join(", ")
        )),
    )
    .await)
}

/// `count` streams of garbage, opened as fast as the cloud grants them, each left open.
pub(super) async fn stream_flood(target: &Target, count: u32) -> Result<Verdict> {
    let session = target.session("stream-flood").await?;
    let started = Instant::now();
    let garbage = [0xeeu8; 16];
    let mut waits = tokio::task::JoinSet::new();
    let mut opened = 0u32;
    for _ in 0..count {
        let send = tokio::time::timeout(WAIT, session.connection.open_uni()).await;
        let Ok(Ok(mut send)) = send else {
            break;
        };
        opened += 1;
        waits.spawn(async move {
            if send.write_all(&garbage).await.is_err() {
                return true;
            }
            matches!(
                tokio::time::timeout(WAIT, send.stopped()).await,
                Ok(Ok(Some(code))) if code == tandem_runtime::transport::STREAM_REFUSED.into()
            )
        });
    }
    let mut refused = 0u32;
    while let Some(result) = waits.join_next().await {
        refused += u32::from(result.unwrap_or(false));
    }
    let seconds = started.elapsed().as_secs_f64();
    let said = format!(
        "{opened} of {count} streams opened in {seconds:.1} s (the cloud grants 16 at a time), \
         {refused} stopped with STREAM_REFUSED"
    );
    Ok(alive_or(
        &session,
        if opened == count && refused == count {
            Verdict::Refused(said)
        } else {
            Verdict::NotRefused(said)
        },
    )
    .await)
}

/// Every stream the cloud grants, each a valid Update header and one byte of its body a
/// second, never finished, for `hold`.
pub(super) async fn slowloris(target: &Target, hold: Duration) -> Result<Verdict> {
    let session = target.session("slowloris").await?;
    let mut frame = header_claiming::<Update>(200);
    frame.truncate(tandem_runtime::wire::HEADER_LEN);
    let mut streams = Vec::new();
    // A stream more than the cloud grants: the last open waits.
    for _ in 0..17 {
        match tokio::time::timeout(Duration::from_secs(2), session.connection.open_uni()).await {
            Ok(Ok(mut send)) => {
                if send.write_all(&frame).await.is_ok() {
                    streams.push(send);
                }
            }
            _ => break,
        }
    }
    let started = Instant::now();
    let mut stopped = vec![false; streams.len()];
    while started.elapsed() < hold && stopped.iter().any(|s| !s) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (send, stopped) in streams.iter_mut().zip(&mut stopped) {
            if !*stopped && send.write_all(&[0]).await.is_err() {
                *stopped = true;
            }
        }
    }
    let stopped = stopped.iter().filter(|&&s| s).count();
    let held = streams.len();
    let said = format!(
        "{held} streams dripping a byte a second, for {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(alive_or(
        &session,
        if stopped == held && held > 0 {
            Verdict::Refused(format!(
                "{said}; all stopped by the cloud at its stream deadline"
            ))
        } else {
            Verdict::NotRefused(format!("{said}; {} still open", held - stopped))
        },
    )
    .await)
}

/// `count` connections of one device, each with an admitted Hello, held for `hold`.
pub(super) async fn connection_flood(
    target: &Target,
    count: u32,
    hold: Duration,
) -> Result<Verdict> {
    let node = target.node("connection-flood")?;
    let endpoint = target.endpoint(&node)?;
    let started = Instant::now();
    let mut connections = Vec::new();
    let mut refused = 0u32;
    for _ in 0..count {
        match target.open(&endpoint, &node).await {
            Ok(connection) => connections.push(connection),
            Err(_) => refused += 1,
        }
    }
    let opened = started.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let open = connections
        .iter()
        .filter(|c| c.close_reason().is_none())
        .count();
    let reason = connections
        .iter()
        .find_map(|c| c.close_reason())
        .map(|err| describe_close(&err))
        .unwrap_or_default();
    let said = format!(
        "{count} connections as {node} in {opened:.1} s ({refused} refused at Hello); \
         {open} still open after {:.0} s",
        hold.as_secs_f64()
    );
    Ok(if open <= 1 {
        Verdict::Refused(format!("{said}; the others {reason}"))
    } else {
        Verdict::NotRefused(said)
    })
}

/// `count` connections that complete the QUIC handshake and never send a Hello.
pub(super) async fn silent_connections(target: &Target, count: u32) -> Result<Verdict> {
    let node = target.node("silent-connections")?;
    let endpoint = target.endpoint(&node)?;
    let started = Instant::now();
    let mut connections = Vec::new();
    let mut refused = 0u32;
    for _ in 0..count {
        match target.connect(&endpoint).await {
            Ok(connection) => connections.push(connection),
            Err(_) => refused += 1,
        }
    }
    let mut reasons = std::collections::BTreeMap::<String, u32>::new();
    let mut open = 0;
    for connection in &connections {
        match closed_within(connection, Duration::from_secs(20)).await {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => open += 1,
        }
    }
    let closed: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let said = format!(
        "{count} connections without a Hello: {refused} refused at their handshake (past the \
         cap of pending Hellos), the {} others all ended within {:.1} s: {}",
        connections.len(),
        started.elapsed().as_secs_f64(),
        closed.join(", ")
    );
    Ok(if open == 0 {
        Verdict::Refused(said)
    } else {
        Verdict::NotRefused(format!("{said}; {open} still open after 20 s"))
    })
}

/// A device joins declaring 600 examples, then again declaring 2^24 (its FedAvg weight).
pub(super) async fn join_inflation(target: &Target) -> Result<Verdict> {
    let session = target.session("join-inflation").await?;
    session.join(600).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(reason) = closed_within(&session.connection, Duration::ZERO).await {
        return Ok(Verdict::NotRefused(format!(
            "an honest Join was refused: the connection {reason}"
        )));
    }
    session.join(1 << 24).await?;
    Ok(match closed_within(&session.connection, WAIT).await {
        Some(reason) => Verdict::Refused(format!(
            "a Join of 600 examples, then one of 2^24: the connection {reason}"
        )),
        None => Verdict::NotRefused("a second Join of 2^24 examples was taken".into()),
    })
}

/// A device joins (600 examples), takes its round tasks and never reports, until a round
/// it was sampled for commits without it (or `wait` passes).
pub(super) async fn silent_participant(target: &Target, wait: Duration) -> Result<Verdict> {
    let session = target.session("silent-participant").await?;
    session.join(600).await?;
    let inbound = Inbound::device();
    let (mut tasked, mut missed) = (Vec::new(), 0u32);
    let watch = async {
        loop {
            let recv = match session.connection.accept_uni().await {
                Ok(recv) => recv,
                Err(err) => return Err(format!("the connection ended: {err}")),
            };
            match transport::receive_envelope(recv, &inbound).await {
                Received::Message(Envelope::RoundTask(task, _), _) => tasked.push(task.round),
                Received::Message(Envelope::RoundResult(result), _)
                    if tasked.contains(&result.round) =>
                {
                    missed += 1;
                    if result.committed {
                        return Ok(result);
                    }
                }
                _ => {}
            }
        }
    };
    Ok(match tokio::time::timeout(wait, watch).await {
        Ok(Ok(result)) => Verdict::Contained(format!(
            "sampled for {} rounds and silent in each: round {} committed without it ({} updates accepted)",
            missed, result.round, result.accepted
        )),
        Ok(Err(ended)) => Verdict::NotRefused(ended),
        Err(_) if tasked.is_empty() => Verdict::NotRefused(format!(
            "never sampled in {:.0} s: raise --participant-wait",
            wait.as_secs_f64()
        )),
        // Round ids advance only as rounds run: gaps between the rounds it was sampled
        // for are rounds that ran without it while it sat out (a round needing every
        // participant aborts when it is silent; it is backed off all the same).
        Err(_) if tasked.windows(2).any(|w| w[1] > w[0] + 1) => Verdict::Contained(format!(
            "sampled for rounds {tasked:?} and silent in each: it sat out the rounds between \
             (backed off), which ran without it"
        )),
        Err(_) => Verdict::NotRefused(format!(
            "sampled for rounds {tasked:?}, none committed without it in {:.0} s",
            wait.as_secs_f64()
        )),
    })
}

/// An Update claiming 100 MiB (within the connection's 128 MiB budget, far over a model's
/// update), its tensor never sent: refused from its message, or held.
pub(super) async fn oversize_update(target: &Target) -> Result<Verdict> {
    let session = target.session("oversize-update").await?;
    let update = Update {
        round: 1,
        node: session.node.clone(),
        num_examples: 600,
        train_loss: 0.5,
        codec: tandem_runtime::wire::CodecDesc::Identity,
        payload_len: 100 << 20,
    };
    let frame = encode_frame(&update)?;
    Ok(stream_verdict(&session, &frame, "an Update announcing 100 MiB").await)
}

/// A certificate of the cloud's CA whose fingerprint is not on the allowlist (revoked).
pub(super) async fn off_allowlist(target: &Target, cert: &Path, key: &Path) -> Result<Verdict> {
    let endpoint = target.endpoint_with(cert, key, &TransportLimits::default())?;
    let node = target.node("off-allowlist")?;
    let connection = match target.connect(&endpoint).await {
        Ok(connection) => connection,
        Err(reason) => return Ok(Verdict::Refused(format!("handshake refused: {reason}"))),
    };
    let frame = encode_frame(&target.hello(&node))?;
    Ok(match send_hello(&connection, &frame).await {
        Ok(_) => Verdict::NotRefused("a revoked certificate was admitted".into()),
        Err(reason) => Verdict::Refused(reason),
    })
}

/// Writes `bytes` on a new stream of `session`, left open: refused if the cloud stops it
/// and the connection stays up.
async fn stream_verdict(session: &Session, bytes: &[u8], what: &str) -> Verdict {
    let verdict = match send_open(&session.connection, bytes, WAIT).await {
        StreamFate::Refused(after) => Verdict::Refused(format!(
            "{what}: stream stopped with STREAM_REFUSED in {:.1} ms",
            ms(after)
        )),
        StreamFate::Other(fate) => Verdict::NotRefused(format!("{what}: {fate}")),
        StreamFate::Open => Verdict::NotRefused(format!("{what}: still read after {WAIT:?}")),
    };
    alive_or(session, verdict).await
}

/// `verdict`, noting that the session's connection stayed up (a bad stream is refused
/// alone) or how it ended.
async fn alive_or(session: &Session, verdict: Verdict) -> Verdict {
    let ended = closed_within(&session.connection, Duration::from_millis(200)).await;
    let note = |said: String| match &ended {
        None => format!("{said}; the connection stayed up"),
        Some(reason) => format!("{said}; then the connection {reason}"),
    };
    match verdict {
        Verdict::Refused(s) => Verdict::Refused(note(s)),
        Verdict::Contained(s) => Verdict::Contained(note(s)),
        Verdict::InCloudLog(s) => Verdict::InCloudLog(note(s)),
        Verdict::NotRefused(s) => Verdict::NotRefused(note(s)),
    }
}

/// Connects on `endpoint` and sends `frame` as its Hello: refused if the cloud closes
/// the connection instead of answering.
async fn hello_verdict(
    target: &Target,
    endpoint: &quinn::Endpoint,
    frame: &[u8],
    what: &str,
) -> Verdict {
    let connection = match target.connect(endpoint).await {
        Ok(connection) => connection,
        Err(reason) => return Verdict::NotRefused(format!("{what}: cannot connect ({reason})")),
    };
    let started = Instant::now();
    match send_hello(&connection, frame).await {
        Ok(_) => Verdict::NotRefused(format!("{what}: answered with a HelloAck")),
        Err(reason) => Verdict::Refused(format!(
            "{what}: {reason} in {:.1} ms",
            ms(started.elapsed())
        )),
    }
}
