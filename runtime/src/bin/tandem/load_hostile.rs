//! A hostile split device for `tandem load --hostile`: it keeps opening streams that
//! the cloud must refuse, each from its header or its message, before any tensor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tandem_runtime::transport::STREAM_REFUSED;
use tandem_runtime::transport::link::DeviceLink;
use tandem_runtime::wire::{Activations, CodecDesc, FrameHeader, Kind, encode_frame};

/// What a hostile device did.
#[derive(Default)]
pub(crate) struct Tally {
    /// Streams it opened.
    pub(crate) sent: u64,
    /// Streams the cloud stopped with `STREAM_REFUSED`.
    pub(crate) refused: u64,
}

/// Attacks on `link` until `done`, cycling through its attacks; `activations` is an
/// honest step's message to distort.
pub(crate) async fn attack(
    link: &DeviceLink,
    activations: &Activations,
    done: &AtomicBool,
) -> Tally {
    let attacks = frames(activations);
    let mut tally = Tally::default();
    let Some(connection) = link.connection().cloned() else {
        return tally;
    };
    while !done.load(Ordering::Relaxed) {
        let frame = &attacks[(tally.sent as usize) % attacks.len()];
        let Ok(mut send) = connection.open_uni().await else {
            break;
        };
        tally.sent += 1;
        if send.write_all(frame).await.is_err() {
            continue;
        }
        // The stream stays open (no tensor follows): a cloud that read on would wait.
        if let Ok(Ok(Some(code))) =
            tokio::time::timeout(Duration::from_secs(2), send.stopped()).await
            && code == STREAM_REFUSED.into()
        {
            tally.refused += 1;
        }
    }
    tally
}

/// The attacks, as the bytes of their streams.
fn frames(honest: &Activations) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    // A rank-1 low-rank payload announcing a megabyte: its decode would be tokens x
    // width floats whatever it holds.
    let lowrank = Activations {
        codec: CodecDesc::LowRank {
            rank: 1,
            power_iters: 0,
            factor_bits: 8,
        },
        payload_len: 1 << 20,
        ..honest.clone()
    };
    // A padded length past the declared one.
    let long = Activations {
        seq: honest.seq.saturating_add(1000),
        ..honest.clone()
    };
    for msg in [lowrank, long] {
        if let Ok(frame) = encode_frame(&msg) {
            frames.push(frame);
        }
    }
    // A federated update (not served by a split cloud) and a cut gradient (cloud ->
    // device), announcing bodies that never come.
    for kind in [Kind::Update, Kind::CutGradient] {
        if let Ok(header) = FrameHeader::new(kind, 200) {
            frames.push(header.to_bytes().to_vec());
        }
    }
    // Garbage.
    frames.push((0..64u8).map(|i| i.wrapping_mul(97)).collect());
    frames
}
