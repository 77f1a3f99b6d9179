//! Any bytes as a frame: parsing and decoding never panic, and whatever decodes
//! re-encodes to exactly the bytes it came from (one encoding per message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_runtime::wire::{
    Activations, Close, CutGradient, Eval, FrameHeader, HEADER_LEN, Hello, HelloAck, Join, Kind,
    Message, Metrics, RoundResult, RoundTask, Update, decode_payload, encode_frame,
};

/// Decodes `frame` as `M`; if that succeeds, its encoding must be `frame` itself.
fn roundtrip<M: Message>(header: &FrameHeader, frame: &[u8]) {
    if let Ok(msg) = decode_payload::<M>(header, &frame[HEADER_LEN..]) {
        let encoded = encode_frame(&msg).expect("a decoded message encodes");
        assert_eq!(encoded, frame, "{:?} re-encodes differently", M::KIND);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(head) = data.get(..HEADER_LEN) else {
        assert!(FrameHeader::parse(data).is_err());
        return;
    };
    let Ok(header) = FrameHeader::parse(head) else {
        return;
    };
    let Some(frame) = data.get(..HEADER_LEN + header.payload_len()) else {
        return;
    };
    match header.kind() {
        Kind::Hello => roundtrip::<Hello>(&header, frame),
        Kind::HelloAck => roundtrip::<HelloAck>(&header, frame),
        Kind::Close => roundtrip::<Close>(&header, frame),
        Kind::Activations => roundtrip::<Activations>(&header, frame),
        Kind::CutGradient => roundtrip::<CutGradient>(&header, frame),
        Kind::Eval => roundtrip::<Eval>(&header, frame),
        Kind::Metrics => roundtrip::<Metrics>(&header, frame),
        Kind::Join => roundtrip::<Join>(&header, frame),
        Kind::RoundTask => roundtrip::<RoundTask>(&header, frame),
        Kind::Update => roundtrip::<Update>(&header, frame),
        Kind::RoundResult => roundtrip::<RoundResult>(&header, frame),
        // Raw tensor bytes: nothing to decode.
        _ => {}
    }
});
