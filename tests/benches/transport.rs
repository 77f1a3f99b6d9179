//! Bulk tensor transfer through tandem's framing vs a plain quinn stream, measured in
//! one run over the same loopback connection settings (mTLS, `TransportLimits`).
//!
//! `cargo xtask bench transport` (or `cargo bench -p tandem-tests --bench transport`).
//! - Bulk: 100 MB per transfer, as an `Update` plus 4 MiB chunk frames
//!   (`write_tensor_message` / `read_tensor_message`), vs the same bytes written to a
//!   quinn stream and read with `read_to_end`; each side collects the bytes into memory.
//!   Alternating, median of 5 each.
//! - Control round trip: `Eval` -> `Metrics` on a fresh bidirectional stream, 1000 times.
//!
//! Last line: `transport_vs_plain_quinn: X` (tandem throughput / plain throughput).

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

/// What the server does with each incoming stream.
async fn serve(connection: quinn::Connection) {
    loop {
        tokio::select! {
            uni = connection.accept_uni() => {
                let Ok(mut recv) = uni else { return };
                let mut kind = [0u8; 1];
                if recv.read_exact(&mut kind).await.is_err() {
                    return;
                }
                let received = if kind[0] == 0 {
                    recv.read_to_end(BULK + 1).await.map(|b| b.len()).unwrap_or(0)
                } else {
                    transport::read_tensor_message::<Update>(&mut recv)
                        .await
                        .map(|(_, b)| b.len())
                        .unwrap_or(0)
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

async fn transfer(connection: &quinn::Connection, framed: bool, payload: &[u8]) -> Duration {
    let start = Instant::now();
    let mut send = connection.open_uni().await.expect("open stream");
    send.write_all(&[u8::from(framed)]).await.expect("write");
    if framed {
        transport::write_tensor_message(&mut send, &update(payload.len()), payload)
            .await
            .expect("framed transfer");
    } else {
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
    transfer(&connection, false, &payload).await;
    transfer(&connection, true, &payload).await;
    let mut plain = Vec::new();
    let mut framed = Vec::new();
    for _ in 0..ROUNDS {
        plain.push(transfer(&connection, false, &payload).await);
        framed.push(transfer(&connection, true, &payload).await);
    }
    let mbps = |d: Duration| BULK as f64 / d.as_secs_f64() / 1e6;
    let (plain, framed) = (median(plain), median(framed));

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
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "plain quinn stream (read_to_end)",
        plain.as_secs_f64() * 1e3,
        mbps(plain)
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "tandem Update + 4 MiB chunks",
        framed.as_secs_f64() * 1e3,
        mbps(framed)
    );
    println!(
        "control round trip (Eval -> Metrics, new stream each): p50 {:.3} ms, p99 {:.3} ms",
        pct(0.50),
        pct(0.99)
    );
    println!(
        "transport_vs_plain_quinn: {:.3}",
        mbps(framed) / mbps(plain)
    );
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    let _ = std::fs::remove_dir_all(dir);
}
