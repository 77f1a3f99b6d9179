//! Bulk tensor transfer through tandem's framing vs a plain quinn stream, measured in
//! one run over the same loopback connection settings (mTLS, `TransportLimits`).
//!
//! `cargo xtask bench transport` (or `cargo bench -p tandem-tests --bench transport`).
//! - Bulk: 100 MB per transfer, as an `Update` plus 4 MiB chunk frames
//!   (`write_tensor_message` / `read_tensor_message`: a buffer sized once per message
//!   from the announced length, each chunk read in place), against the same bytes on a
//!   plain quinn stream behind an 8-byte length prefix, read with `read_exact` into one
//!   buffer the receiver allocated once for all transfers (the headline baseline: what a
//!   careful user writes); and, as the figure recorded before, the same plain stream
//!   read with `read_to_end` (which buffers every chunk and copies the whole payload into
//!   a new Vec). Rotating, median of 5 each.
//! - Control round trip: `Eval` -> `Metrics` on a fresh bidirectional stream, 1000 times.
//!
//! The line before last: `transport_vs_read_to_end: Y`; the last:
//! `transport_vs_plain_quinn: X` (tandem throughput / the `read_exact` baseline's).

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tandem_runtime::transport::{self, TransportLimits, pki::Pki, tls};
use tandem_runtime::wire::{CodecDesc, Eval, Metrics, NodeName, Update};

const BULK: usize = 100_000_000;
const WRITE: usize = 4 << 20;
const ROUNDS: usize = 5;
const PINGS: usize = 1000;

fn update(len: usize) -> Update {
    Update {
        round: 1,
        node: NodeName::try_from("bench-device").expect("short name"),
        num_examples: 1,
        train_loss: 0.0,
        codec: CodecDesc::Identity,
        payload_len: len as u64,
    }
}

/// How a transfer is sent and received.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// Plain stream, received with `read_to_end`.
    ReadToEnd = 0,
    /// tandem's `Update` and chunk frames.
    Framed = 1,
    /// Plain stream behind a length prefix, `read_exact` into a buffer allocated once.
    ReadExact = 2,
}

/// What the server does with each incoming stream.
async fn serve(connection: quinn::Connection) {
    // The read_exact baseline's buffer, allocated once for every transfer.
    let mut buffer = vec![0u8; BULK];
    loop {
        tokio::select! {
            uni = connection.accept_uni() => {
                let Ok(mut recv) = uni else { return };
                let mut kind = [0u8; 1];
                if recv.read_exact(&mut kind).await.is_err() {
                    return;
                }
                let received = match kind[0] {
                    0 => recv.read_to_end(BULK + 1).await.map(|b| b.len()).unwrap_or(0),
                    1 => transport::read_tensor_message::<Update>(&mut recv)
                        .await
                        .map(|(_, b)| b.len())
                        .unwrap_or(0),
                    _ => {
                        let mut prefix = [0u8; 8];
                        let announced = match recv.read_exact(&mut prefix).await {
                            Ok(()) => u64::from_le_bytes(prefix) as usize,
                            Err(_) => 0,
                        };
                        // Capped before reading, as any receiver must.
                        if announced == BULK && recv.read_exact(&mut buffer).await.is_ok() {
                            std::hint::black_box(&buffer);
                            BULK
                        } else {
                            0
                        }
                    }
                };
                if received != BULK {
                    // A panic here would leave the client waiting for an ack forever.
                    eprintln!("server received {received} of {BULK} bytes");
                    std::process::exit(1);
                }
                // Acknowledge on a uni stream so the client can stop its clock.
                if let Ok(mut ack) = connection.open_uni().await {
                    let _ = ack.write_all(&[1]).await;
                    let _ = ack.finish();
                }
            }
            bi = connection.accept_bi() => {
                let Ok((mut send, mut recv)) = bi else { return };
                let Ok(eval) = transport::read_frame::<Eval>(&mut recv).await else { return };
                let metrics = Metrics { step: eval.step, loss: 0.0, correct: 0, total: 0 };
                let _ = transport::write_frame(&mut send, &metrics).await;
                let _ = send.finish();
            }
        }
    }
}

async fn transfer(connection: &quinn::Connection, path: Path, payload: &[u8]) -> Duration {
    let start = Instant::now();
    let mut send = connection.open_uni().await.expect("open stream");
    send.write_all(&[path as u8]).await.expect("write");
    if path == Path::Framed {
        transport::write_tensor_message(&mut send, &update(payload.len()), payload)
            .await
            .expect("framed transfer");
    } else {
        if path == Path::ReadExact {
            let prefix = (payload.len() as u64).to_le_bytes();
            send.write_all(&prefix).await.expect("length prefix");
        }
        for piece in payload.chunks(WRITE) {
            send.write_all(piece).await.expect("plain transfer");
        }
    }
    send.finish().expect("finish");
    let mut ack = connection.accept_uni().await.expect("ack stream");
    let mut byte = [0u8; 1];
    ack.read_exact(&mut byte).await.expect("ack");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()));
    let pki = Pki::new(&dir);
    pki.init().expect("CA");
    let device = pki.issue("bench-device").expect("device certificate");
    let limits = TransportLimits::default();

    let server_config = tls::server_config(
        pki.cloud_identity().expect("identity"),
        &pki.ca_cert(),
        &limits,
    )
    .expect("server config");
    let server =
        quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr: SocketAddr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            if let Ok(connection) = incoming.await {
                tokio::spawn(serve(connection));
            }
        }
    });

    let identity = tls::Identity::load(&device.cert, &device.key).expect("device identity");
    let config = tls::client_config(&pki.ca_cert(), identity, &limits).expect("client config");
    let client = transport::client_endpoint(addr, config).expect("client");
    let connection = client
        .connect(addr, transport::DEFAULT_SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");

    let payload: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
    // One warm-up transfer each (congestion window, allocator).
    let paths = [Path::ReadExact, Path::Framed, Path::ReadToEnd];
    for path in paths {
        transfer(&connection, path, &payload).await;
    }
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (i, path) in paths.into_iter().enumerate() {
            times[i].push(transfer(&connection, path, &payload).await);
        }
    }
    let mbps = |d: Duration| BULK as f64 / d.as_secs_f64() / 1e6;
    let [exact, framed, to_end] = times.map(median);

    let mut rtts = Vec::with_capacity(PINGS);
    for step in 0..PINGS as u64 {
        let start = Instant::now();
        let (mut send, mut recv) = connection.open_bi().await.expect("open");
        transport::write_frame(&mut send, &Eval { step, batches: 0 })
            .await
            .expect("eval");
        let _: Metrics = transport::read_frame(&mut recv).await.expect("metrics");
        rtts.push(start.elapsed());
    }
    rtts.sort_unstable();
    let pct =
        |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)].as_secs_f64() * 1e3;

    println!("loopback QUIC, mTLS, 100 MB per transfer, median of {ROUNDS}");
    println!("{:<34} {:>10} {:>10}", "path", "ms", "MB/s");
    for (name, time) in [
        ("plain quinn, length + read_exact", exact),
        ("tandem Update + 4 MiB chunks", framed),
        ("plain quinn, read_to_end", to_end),
    ] {
        println!(
            "{:<34} {:>10.1} {:>10.1}",
            name,
            time.as_secs_f64() * 1e3,
            mbps(time)
        );
    }
    println!(
        "control round trip (Eval -> Metrics, new stream each): p50 {:.3} ms, p99 {:.3} ms",
        pct(0.50),
        pct(0.99)
    );
    println!(
        "transport_vs_read_to_end: {:.3}",
        mbps(framed) / mbps(to_end)
    );
    println!(
        "transport_vs_plain_quinn: {:.3}",
        mbps(framed) / mbps(exact)
    );
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    let _ = std::fs::remove_dir_all(dir);
}
