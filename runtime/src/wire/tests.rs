//! Golden bytes, round trips and rejection of malformed frames.

use super::*;
use proptest::prelude::*;

fn name<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).expect("test name fits")
}

fn hello() -> Hello {
    Hello {
        min_version: 1,
        max_version: 1,
        node: name("pi-01"),
        software: name("tandem 0.1.0"),
        capabilities: Capabilities::NONE,
        model: ModelDesc {
            name: name(""),
            cut: 0,
            hidden: 0,
        },
        codecs: heapless::Vec::new(),
        plan: RunPlan::default(),
    }
}

fn ack() -> HelloAck {
    HelloAck {
        version: 1,
        peer: name("cloud"),
        software: name("tandem-cloud 0.1.0"),
        capabilities: Capabilities::NONE,
        session: 300,
    }
}

fn vec_of<T: Clone, const N: usize>(items: &[T]) -> heapless::Vec<T, N> {
    heapless::Vec::from_slice(items).expect("test vector fits")
}

/// Decodes a whole frame the way a transport does: header first, then payload.
fn decode_whole<M: Message>(frame: &[u8]) -> Result<M, WireError> {
    let header = FrameHeader::parse(frame)?;
    decode_payload(&header, &frame[HEADER_LEN..])
}

/// The schema hash is pinned: changing a message must change `SCHEMA`, and that must be
/// a deliberate edit of this test too.
#[test]
fn schema_hash_is_pinned() {
    assert_eq!(
        SCHEMA_HASH, 0x5cad_134d,
        "SCHEMA changed: update WIRE.md and this test"
    );
}

/// `header ++ payload` for a frame of `kind` (the header layout is pinned byte by byte
/// in `hello_golden_bytes`).
fn framed(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut frame = FrameHeader::new(kind, payload.len())
        .unwrap()
        .to_bytes()
        .to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// `value -> exact bytes -> value`, postcard's loopback style.
fn golden<M: Message + PartialEq + core::fmt::Debug>(msg: M, payload: &[u8]) {
    let frame = encode_frame(&msg).unwrap();
    assert_eq!(frame, framed(M::KIND, payload), "{:?}", M::KIND);
    assert_eq!(decode_whole::<M>(&frame).unwrap(), msg);
}

#[test]
fn hello_golden_bytes() {
    let frame = encode_frame(&hello()).unwrap();
    let mut want = b"TNDM".to_vec();
    want.extend_from_slice(&[1, 0, 1, 0]); // version 1, kind Hello
    want.extend_from_slice(&SCHEMA_HASH.to_le_bytes());
    want.extend_from_slice(&[34, 0, 0, 0]); // payload length
    want.extend_from_slice(&[1, 1, 5]); // min, max, node length
    want.extend_from_slice(b"pi-01");
    want.push(12);
    want.extend_from_slice(b"tandem 0.1.0");
    want.extend_from_slice(&[0]); // capabilities
    want.extend_from_slice(&[0, 0, 0]); // model: "", cut 0, hidden 0
    want.extend_from_slice(&[0]); // no codecs
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // no run plan
    assert_eq!(frame, want);
    assert_eq!(decode_whole::<Hello>(&frame).unwrap(), hello());
}

#[test]
fn hello_with_model_and_codecs_golden_bytes() {
    let msg = Hello {
        capabilities: Capabilities::SPLIT,
        model: ModelDesc {
            name: name("all-MiniLM-L6-v2"),
            cut: 2,
            hidden: 384,
        },
        codecs: vec_of(&[
            CodecDesc::LowRank {
                rank: 8,
                power_iters: 2,
                factor_bits: 8,
            },
            CodecDesc::Int8 { block: 64 },
        ]),
        plan: RunPlan {
            steps: 300,
            warmup: 30,
            run: 5,
            process: 300,
            start_step: 100,
            checkpoint_every: 100,
            max_batch: 16,
            max_seq: 300,
        },
        ..hello()
    };
    let mut payload = vec![1, 1, 5];
    payload.extend_from_slice(b"pi-01");
    payload.push(12);
    payload.extend_from_slice(b"tandem 0.1.0");
    payload.push(1); // SPLIT
    payload.push(16);
    payload.extend_from_slice(b"all-MiniLM-L6-v2");
    payload.extend_from_slice(&[2, 0x80, 0x03]); // cut (u8), hidden 384 (varint)
    payload.extend_from_slice(&[2, 3, 8, 2, 8, 2, 64]); // [LowRank{8,2,8}, Int8{64}]
    // plan: 300 steps, 30 warm-up, run 5, process 300, from step 100, checkpoints every
    // 100, steps of at most 16 sequences of 300 tokens
    payload.extend_from_slice(&[0xac, 0x02, 30, 5, 0xac, 0x02, 100, 100, 16, 0xac, 0x02]);
    golden(msg, &payload);
}

#[test]
fn hello_ack_golden_bytes() {
    let mut payload = vec![1, 5];
    payload.extend_from_slice(b"cloud");
    payload.push(18);
    payload.extend_from_slice(b"tandem-cloud 0.1.0");
    payload.extend_from_slice(&[0, 0xac, 0x02]); // capabilities, session 300
    golden(ack(), &payload);
}

#[test]
fn close_golden_bytes() {
    golden(
        Close {
            code: 2,
            reason: name("bye"),
        },
        &[2, 3, b'b', b'y', b'e'],
    );
}

#[test]
fn split_messages_golden_bytes() {
    let activations = Activations {
        step: 7,
        train: true,
        batch: 2,
        seq: 4,
        hidden: 384,
        seq_lens: vec_of(&[4, 3]),
        labels: vec_of(&[1, 0]),
        reviews: vec_of(&[300, 5]),
        cached: false,
        codec: CodecDesc::Identity,
        payload_len: 12288,
    };
    golden(
        activations,
        &[
            7, 1, 2, 4, 0x80, 0x03, 2, 4, 3, 2, 1, 0, 2, 0xac, 0x02, 5, 0, 0, 0x80, 0x60,
        ],
    );
    let gradient = CutGradient {
        step: 7,
        loss: 0.5,
        kept: true,
        codec: CodecDesc::F16,
        payload_len: 6144,
    };
    golden(gradient, &[7, 0, 0, 0, 0x3f, 1, 1, 0x80, 0x30]);
    golden(
        Eval {
            step: 9,
            batches: 3,
        },
        &[9, 3],
    );
    golden(
        Metrics {
            step: 9,
            loss: 0.25,
            correct: 80,
            total: 100,
        },
        &[9, 0, 0, 0x80, 0x3e, 80, 100],
    );
}

#[test]
fn fl_messages_golden_bytes() {
    let mut payload = vec![5];
    payload.extend_from_slice(b"pi-01");
    payload.extend_from_slice(&[0xe8, 0x07, 2]); // 1000 examples, FL
    golden(
        Join {
            node: name("pi-01"),
            num_examples: 1000,
            capabilities: Capabilities::FL,
        },
        &payload,
    );

    let task = RoundTask {
        round: 3,
        deadline_ms: 60_000,
        config: RoundConfig {
            local_epochs: 1,
            batch_size: 32,
            lr: 0.01,
            proximal_mu: 0.0,
        },
        model: ModelPayload::Delta {
            base_round: 2,
            base_fnv: 258,
        },
        model_codec: CodecDesc::F16,
        update_codec: CodecDesc::TopK { ratio_ppm: 10_000 },
        payload_len: 1000,
        factors_len: 0,
    };
    golden(
        task,
        &[
            3, 0xe0, 0xd4, 0x03, // round, deadline 60000 ms
            1, 32, 0x0a, 0xd7, 0x23, 0x3c, 0, 0, 0, 0, // config
            1, 2, 0x82, 0x02, // Delta against round 2, base FNV 258
            1,    // model codec F16
            4, 0x90, 0x4e, // update codec TopK 10000 ppm
            0xe8, 0x07, // payload_len
            0,    // factors_len
        ],
    );

    let mut payload = vec![3, 5];
    payload.extend_from_slice(b"pi-01");
    // 1000 examples, train loss 0.5 (f32 LE), Int8{0}, 5 bytes
    payload.extend_from_slice(&[0xe8, 0x07, 0, 0, 0, 0x3f, 2, 0, 5]);
    let update = Update {
        round: 3,
        node: name("pi-01"),
        num_examples: 1000,
        train_loss: 0.5,
        codec: CodecDesc::Int8 { block: 0 },
        payload_len: 5,
    };
    golden(update, &payload);
    golden(
        RoundResult {
            round: 3,
            committed: true,
            accepted: 9,
            rejected: 1,
        },
        &[3, 1, 9, 1],
    );
}

#[test]
fn every_kind_round_trips_its_number_and_has_a_cap() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_u16(kind as u16), Some(kind));
        assert!(kind.max_payload() > 0);
    }
    assert_eq!(Kind::from_u16(0), None);
    assert_eq!(Kind::Chunk.max_payload(), CHUNK_MAX);
}

#[test]
fn tensor_payload_is_chunked_and_reassembled() {
    let len = 2 * CHUNK_MAX + 5;
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let headers: Vec<FrameHeader> = chunk_headers(len).collect();
    assert_eq!(headers.len(), 3);
    assert_eq!(headers[2].payload_len(), 5);
    let msg = Update {
        payload_len: len as u64,
        ..update_announcing(0)
    };
    let mut assembler = TensorAssembler::new(&msg).unwrap();
    let mut at = 0;
    for header in &headers {
        let bytes = FrameHeader::parse(&header.to_bytes()).unwrap();
        assembler
            .handle_chunk(&bytes, &payload[at..at + header.payload_len()])
            .unwrap();
        at += header.payload_len();
    }
    assert!(assembler.is_complete());
    assert_eq!(assembler.finish().unwrap(), payload);
}

fn update_announcing(payload_len: u64) -> Update {
    Update {
        round: 1,
        node: name("pi"),
        num_examples: 1,
        train_loss: 0.0,
        codec: CodecDesc::Identity,
        payload_len,
    }
}

#[test]
fn tensor_caps_and_overruns_are_refused() {
    let huge = update_announcing(<Update as TensorMessage>::MAX_TENSOR + 1);
    assert!(matches!(
        TensorAssembler::new(&huge),
        Err(WireError::TensorTooLarge { .. })
    ));

    let mut assembler = TensorAssembler::new(&update_announcing(4)).unwrap();
    let five = FrameHeader::new(Kind::Chunk, 5).unwrap();
    assert!(matches!(
        assembler.handle_chunk(&five, &[0; 5]),
        Err(WireError::ChunkOverrun {
            remaining: 4,
            got: 5
        })
    ));
    let not_chunk = FrameHeader::new(Kind::Eval, 2).unwrap();
    assert!(matches!(
        assembler.handle_chunk(&not_chunk, &[0; 2]),
        Err(WireError::UnexpectedKind { .. })
    ));
    let three = FrameHeader::new(Kind::Chunk, 3).unwrap();
    assembler.handle_chunk(&three, &[1, 2, 3]).unwrap();
    assert!(matches!(
        assembler.finish(),
        Err(WireError::Truncated { needed: 4, have: 3 })
    ));
}

#[test]
fn header_fields_are_checked_in_order() {
    let good = encode_frame(&hello()).unwrap();

    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(
        FrameHeader::parse(&bad),
        Err(WireError::BadMagic { .. })
    ));

    let mut bad = good.clone();
    bad[4] = 9;
    assert_eq!(
        FrameHeader::parse(&bad),
        Err(WireError::UnsupportedVersion {
            found: 9,
            min: 1,
            max: 1
        })
    );

    let mut bad = good.clone();
    bad[8] ^= 1;
    assert!(matches!(
        FrameHeader::parse(&bad),
        Err(WireError::SchemaMismatch { .. })
    ));

    let mut bad = good.clone();
    bad[6] = 200;
    assert_eq!(FrameHeader::parse(&bad), Err(WireError::UnknownKind(200)));

    let mut bad = good.clone();
    bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        FrameHeader::parse(&bad),
        Err(WireError::TooLarge { kind: Kind::Hello, len, cap: 512 }) if len == u32::MAX as usize
    ));

    assert_eq!(
        FrameHeader::parse(&good[..10]),
        Err(WireError::Truncated {
            needed: HEADER_LEN,
            have: 10
        })
    );
}

#[test]
fn first_failing_check_is_reported() {
    // Bad magic and bad version and bad schema: magic wins.
    let mut bad = encode_frame(&hello()).unwrap();
    bad[0] = b'X';
    bad[4] = 9;
    bad[8] ^= 1;
    assert!(matches!(
        FrameHeader::parse(&bad),
        Err(WireError::BadMagic { .. })
    ));
    // Bad version and bad schema and unknown kind: version wins.
    bad[0] = b'T';
    bad[6] = 200;
    assert!(matches!(
        FrameHeader::parse(&bad),
        Err(WireError::UnsupportedVersion { .. })
    ));
    // Bad schema and unknown kind: schema wins.
    bad[4] = 1;
    assert!(matches!(
        FrameHeader::parse(&bad),
        Err(WireError::SchemaMismatch { .. })
    ));
}

#[test]
fn payload_must_match_announced_length_and_kind() {
    let good = encode_frame(&hello()).unwrap();
    let header = FrameHeader::parse(&good).unwrap();

    let short = &good[HEADER_LEN..good.len() - 1];
    assert!(matches!(
        decode_payload::<Hello>(&header, short),
        Err(WireError::Truncated { .. })
    ));

    let mut long = good[HEADER_LEN..].to_vec();
    long.push(0);
    assert_eq!(
        decode_payload::<Hello>(&header, &long),
        Err(WireError::TrailingBytes(1))
    );

    assert_eq!(
        decode_payload::<HelloAck>(&header, &good[HEADER_LEN..]),
        Err(WireError::UnexpectedKind {
            expected: Kind::HelloAck,
            found: Kind::Hello
        })
    );
}

#[test]
fn message_shorter_than_announced_payload_is_trailing_bytes() {
    // Announce one byte more than the Hello and put a junk byte there.
    let mut frame = encode_frame(&hello()).unwrap();
    frame[12] += 1;
    frame.push(0xff);
    assert_eq!(
        decode_whole::<Hello>(&frame),
        Err(WireError::TrailingBytes(1))
    );
}

#[test]
fn overlong_varint_is_refused_as_non_canonical() {
    // Found by the frame_roundtrip fuzz target: postcard itself accepts `fe 00` for 126.
    let msg = Metrics {
        step: 126,
        loss: 0.5,
        correct: 1,
        total: 2,
    };
    let frame = encode_frame(&msg).unwrap();
    assert_eq!(frame[HEADER_LEN], 126);
    let mut overlong = frame[..HEADER_LEN].to_vec();
    overlong.extend_from_slice(&[0xfe, 0x00]);
    overlong.extend_from_slice(&frame[HEADER_LEN + 1..]);
    overlong[12] += 1;
    assert_eq!(
        decode_whole::<Metrics>(&overlong),
        Err(WireError::NonCanonical {
            kind: Kind::Metrics
        })
    );
    assert_eq!(decode_whole::<Metrics>(&frame), Ok(msg));
}

#[test]
fn oversized_name_is_malformed_not_a_panic() {
    let mut frame = encode_frame(&hello()).unwrap();
    // Claim a 100-byte node name (capacity 64) and pad the payload to match.
    frame[HEADER_LEN + 2] = 100;
    frame.resize(HEADER_LEN + 3 + 100 + 1, b'a');
    let len = (frame.len() - HEADER_LEN) as u32;
    frame[12..16].copy_from_slice(&len.to_le_bytes());
    assert!(matches!(
        decode_whole::<Hello>(&frame),
        Err(WireError::Malformed { .. })
    ));
}

#[test]
fn version_negotiation_picks_highest_common() {
    let mut h = hello();
    assert_eq!(h.negotiate(), Some(PROTOCOL_VERSION));
    h.min_version = PROTOCOL_VERSION + 1;
    h.max_version = PROTOCOL_VERSION + 5;
    assert_eq!(h.negotiate(), None);
    h.min_version = 0;
    h.max_version = 0;
    assert_eq!(h.negotiate(), None);
}

#[test]
fn close_codes_round_trip() {
    // Every code of WIRE.md's table, and nothing past it.
    for code in 0..=8u64 {
        let c = CloseCode::from_code(code).expect("a code of the table");
        assert_eq!(c as u64, code);
        assert!(!c.reason().is_empty());
    }
    assert_eq!(CloseCode::from_code(9), None);
    assert_eq!(CloseCode::from_code(99), None);
}

proptest! {
    /// Any bytes at all: parsing and decoding return, never panic, and a frame that
    /// decodes re-encodes to exactly the same bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(msg) = decode_whole::<Hello>(&bytes) {
            prop_assert_eq!(encode_frame(&msg).unwrap(), bytes);
        }
    }

    #[test]
    fn valid_headers_with_random_payload_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let Ok(header) = FrameHeader::new(Kind::HelloAck, payload.len()) else {
            return Ok(());
        };
        let mut frame = header.to_bytes().to_vec();
        frame.extend_from_slice(&payload);
        if let Ok(msg) = decode_whole::<HelloAck>(&frame) {
            prop_assert_eq!(encode_frame(&msg).unwrap(), frame);
        }
    }
}

#[test]
fn a_chunk_arrives_in_pieces_and_no_piece_overruns_it() {
    let msg = update_announcing(10);
    let mut assembler = TensorAssembler::new(&msg).unwrap();
    let six = FrameHeader::new(Kind::Chunk, 6).unwrap();
    assert_eq!(assembler.begin_chunk(&six), Ok(6));
    // The next chunk cannot start before this one is whole.
    assert!(matches!(
        assembler.begin_chunk(&six),
        Err(WireError::Truncated { .. })
    ));
    assembler.push(&[1, 2]).unwrap();
    assert!(matches!(
        assembler.push(&[0; 5]),
        Err(WireError::ChunkOverrun { .. })
    ));
    assembler.push(&[3, 4, 5, 6]).unwrap();
    let four = FrameHeader::new(Kind::Chunk, 4).unwrap();
    assert_eq!(assembler.begin_chunk(&four), Ok(4));
    assembler.push(&[7, 8, 9, 10]).unwrap();
    assert_eq!(assembler.finish().unwrap(), (1..=10).collect::<Vec<u8>>());
}
