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
    }
}

fn ack() -> HelloAck {
    HelloAck {
        version: 1,
        peer: name("cloud"),
        software: name("tandem-cloud 0.1.0"),
    }
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
        SCHEMA_HASH, 0xe870_22bb,
        "SCHEMA changed: update WIRE.md and this test"
    );
}

#[test]
fn hello_golden_bytes() {
    let frame = encode_frame(&hello()).unwrap();
    let mut want = b"TNDM".to_vec();
    want.extend_from_slice(&[1, 0, 1, 0]); // version 1, kind Hello
    want.extend_from_slice(&SCHEMA_HASH.to_le_bytes());
    want.extend_from_slice(&[21, 0, 0, 0]); // payload length
    want.extend_from_slice(&[1, 1, 5]); // min, max, node length
    want.extend_from_slice(b"pi-01");
    want.push(12);
    want.extend_from_slice(b"tandem 0.1.0");
    assert_eq!(frame, want);
    assert_eq!(decode_whole::<Hello>(&frame).unwrap(), hello());
}

#[test]
fn hello_ack_golden_bytes() {
    let frame = encode_frame(&ack()).unwrap();
    let mut want = b"TNDM".to_vec();
    want.extend_from_slice(&[1, 0, 2, 0]);
    want.extend_from_slice(&SCHEMA_HASH.to_le_bytes());
    want.extend_from_slice(&[26, 0, 0, 0]);
    want.extend_from_slice(&[1, 5]);
    want.extend_from_slice(b"cloud");
    want.push(18);
    want.extend_from_slice(b"tandem-cloud 0.1.0");
    assert_eq!(frame, want);
    assert_eq!(decode_whole::<HelloAck>(&frame).unwrap(), ack());
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
        Err(WireError::TooLarge { kind: Kind::Hello, len, cap: 256 }) if len == u32::MAX as usize
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
    // Announce 22 bytes but put a 21-byte Hello plus one junk byte inside.
    let mut frame = encode_frame(&hello()).unwrap();
    frame[12] = 22;
    frame.push(0xff);
    assert_eq!(
        decode_whole::<Hello>(&frame),
        Err(WireError::TrailingBytes(1))
    );
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
    for code in 0..8u64 {
        if let Some(c) = CloseCode::from_code(code) {
            assert_eq!(c as u64, code);
            assert!(!c.reason().is_empty());
        }
    }
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
