//! An announced tensor length and arbitrary frame headers fed to the tensor assembler:
//! it never holds more than was announced, refuses every frame that is not a chunk or
//! would overrun, and finishes only when complete, with exactly the bytes of the chunks it
//! accepted, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_runtime::wire::{
    Activations, CodecDesc, FrameHeader, HEADER_LEN, TensorAssembler, TensorMessage,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    // Announced lengths are mostly small (so chunks can complete them) and sometimes any
    // u64, the cap included.
    let raw = u64::from_le_bytes(data[..8].try_into().unwrap());
    let announced = if raw & 1 == 0 {
        (raw >> 1) % 65_536
    } else {
        raw >> 1
    };
    let msg = Activations {
        step: 0,
        train: true,
        batch: 0,
        seq: 0,
        hidden: 0,
        seq_lens: Default::default(),
        labels: Default::default(),
        reviews: Default::default(),
        cached: false,
        codec: CodecDesc::Identity,
        payload_len: announced,
    };
    let Ok(mut assembler) = TensorAssembler::new(&msg) else {
        assert!(
            announced > Activations::MAX_TENSOR,
            "refused {announced} within the cap"
        );
        return;
    };
    let mut accepted: Vec<u8> = Vec::new();
    // Each record: a 16-byte header, then up to 255 bytes of chunk (its length a byte).
    let mut rest = &data[8..];
    while rest.len() > HEADER_LEN {
        let (head, tail) = rest.split_at(HEADER_LEN);
        let take = usize::from(tail[0]).min(tail.len() - 1);
        let chunk = &tail[1..1 + take];
        rest = &tail[1 + take..];
        let Ok(header) = FrameHeader::parse(head) else {
            continue;
        };
        let before = assembler.remaining();
        match assembler.handle_chunk(&header, chunk) {
            Ok(()) => {
                accepted.extend_from_slice(chunk);
                assert_eq!(assembler.remaining(), before - chunk.len() as u64);
            }
            Err(_) => assert_eq!(assembler.remaining(), before, "a refused chunk moved"),
        }
        assert_eq!(accepted.len() as u64 + assembler.remaining(), announced);
    }
    let complete = assembler.is_complete();
    match assembler.finish() {
        Ok(bytes) => assert_eq!(bytes, accepted),
        Err(_) => assert!(!complete, "a complete payload was refused"),
    }
});
