//! Tensor-carrying messages over a real mTLS QUIC connection: chunked both ways, caps
//! enforced before any chunk is read.

use std::net::SocketAddr;
use tandem_runtime::transport::{self, TransportError, TransportLimits, pki::Pki, tls};
use tandem_runtime::wire::{
    CHUNK_MAX, CodecDesc, FrameHeader, Kind, NodeName, TensorMessage, Update, WireError,
    encode_frame,
};

/// A connected (client, server) pair of quinn connections with tandem's TLS settings.
async fn pair(test: &str) -> (quinn::Connection, quinn::Connection, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tandem-tensor-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = Pki::new(&dir);
    pki.init().unwrap();
    let device = pki.issue("pi").unwrap();
    let limits = TransportLimits::default();
    let server_config =
        tls::server_config(pki.cloud_identity().unwrap(), &pki.ca_cert(), &limits).unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let identity = tls::Identity::load(&device.cert, &device.key).unwrap();
    let client_config = tls::client_config(&pki.ca_cert(), identity, &limits).unwrap();
    let client = transport::client_endpoint(addr, client_config).unwrap();
    let connecting = client
        .connect(addr, transport::DEFAULT_SERVER_NAME)
        .unwrap();
    // Both handshake halves must be polled at once.
    let accepting = async { server.accept().await.expect("incoming").await };
    let (client_conn, server_conn) = tokio::join!(connecting, accepting);
    (client_conn.unwrap(), server_conn.unwrap(), dir)
}

fn update(len: u64) -> Update {
    Update {
        round: 4,
        node: NodeName::try_from("pi").unwrap(),
        num_examples: 10,
        train_loss: 0.0,
        codec: CodecDesc::Identity,
        payload_len: len,
    }
}

#[tokio::test]
async fn tensor_message_crosses_in_chunks_intact() {
    let (client, server, dir) = pair("ok").await;
    let tensor: Vec<u8> = (0..2 * CHUNK_MAX + 12_345)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    let sent = tensor.clone();
    let sender = tokio::spawn(async move {
        let mut send = client.open_uni().await.unwrap();
        transport::write_tensor_message(&mut send, &update(sent.len() as u64), &sent)
            .await
            .unwrap();
        send.finish().unwrap();
        client
    });
    let mut recv = server.accept_uni().await.unwrap();
    let (msg, bytes) = transport::read_tensor_message::<Update>(&mut recv)
        .await
        .unwrap();
    assert_eq!(msg, update(tensor.len() as u64));
    assert!(bytes == tensor, "tensor bytes changed in transit");
    drop(sender.await.unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn announced_length_over_the_cap_is_refused_before_any_chunk() {
    let (client, server, dir) = pair("cap").await;
    let huge = update(<Update as TensorMessage>::MAX_TENSOR + 1);
    let mut send = client.open_uni().await.unwrap();
    send.write_all(&encode_frame(&huge).unwrap()).await.unwrap();
    let mut recv = server.accept_uni().await.unwrap();
    let err = transport::read_tensor_message::<Update>(&mut recv)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Wire(WireError::TensorTooLarge { .. })),
        "{err:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn chunk_overrunning_the_announced_length_is_refused() {
    let (client, server, dir) = pair("overrun").await;
    let mut send = client.open_uni().await.unwrap();
    send.write_all(&encode_frame(&update(10)).unwrap())
        .await
        .unwrap();
    send.write_all(&FrameHeader::new(Kind::Chunk, 11).unwrap().to_bytes())
        .await
        .unwrap();
    send.write_all(&[0; 11]).await.unwrap();
    let mut recv = server.accept_uni().await.unwrap();
    let err = transport::read_tensor_message::<Update>(&mut recv)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Wire(WireError::ChunkOverrun {
                remaining: 10,
                got: 11
            })
        ),
        "{err:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn mismatched_tensor_length_is_refused_by_the_sender() {
    let (client, _server, dir) = pair("sender").await;
    let mut send = client.open_uni().await.unwrap();
    let err = transport::write_tensor_message(&mut send, &update(5), &[0; 4])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Protocol(_)), "{err:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
