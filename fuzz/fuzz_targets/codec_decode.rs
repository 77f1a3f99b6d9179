//! Arbitrary bytes decoded as every codec at arbitrary (bounded) shapes: a typed error or
//! exactly `rows x cols` finite values, never a panic; a decode that succeeds re-encodes
//! and decodes to the same length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_runtime::codec::{self, Encoder, Shape, SharedFactor, Side};
use tandem_runtime::wire::CodecDesc;

/// Shapes stay within what a split step or an update layer can announce in practice
/// (16 Mi values at most), so the fuzzer spends its time in the decoders, not in memset.
const MAX_ROWS: usize = 4096;
const MAX_COLS: usize = 4096;

/// The codec a selector byte and four parameter bytes describe (some unsupported on
/// purpose: the decoder must refuse them).
fn desc(select: u8, p: [u8; 4]) -> CodecDesc {
    let word = u32::from_le_bytes(p);
    let bits = [8, 16, 32, 7][usize::from(p[1] & 3)];
    match select % 8 {
        0 => CodecDesc::Identity,
        1 => CodecDesc::F16,
        2 => CodecDesc::Int8 {
            block: u16::from_le_bytes([p[0], p[1]]),
        },
        3 => CodecDesc::LowRank {
            rank: u16::from(p[0]),
            power_iters: p[2] % 20,
            factor_bits: bits,
        },
        4 => CodecDesc::TopK {
            ratio_ppm: word % 1_100_000,
        },
        5 => CodecDesc::Dct {
            keep_ppm: word % 1_100_000,
        },
        _ => CodecDesc::Acp {
            rank: u16::from(p[0]),
            factor_bits: bits,
        },
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let desc = desc(data[0], [data[1], data[2], data[3], data[4]]);
    let rows = usize::from(u16::from_le_bytes([data[5], data[6]])) % (MAX_ROWS + 1);
    let cols = usize::from(u16::from_le_bytes([data[7], data[8]])) % (MAX_COLS + 1);
    let shape = Shape::new(rows, cols);
    let bytes = &data[9..];
    // Acp decodes against a factor both sides hold: an orthonormal one (the leading
    // columns of the identity), on the side the selector's top bit picks.
    let side = if data[0] & 0x80 == 0 {
        Side::Right
    } else {
        Side::Left
    };
    let shared = match desc {
        CodecDesc::Acp { rank, .. } => {
            let r = usize::from(rank).min(rows.min(cols));
            let n = side.shared_rows(shape);
            let mut values = vec![0.0; n * r];
            for j in 0..r.min(n) {
                values[j * r + j] = 1.0;
            }
            Some(SharedFactor { side, values })
        }
        _ => None,
    };
    let Ok(decoded) = codec::decode_shared(desc, shape, bytes, shared.as_ref()) else {
        return;
    };
    assert_eq!(decoded.len(), rows * cols, "{desc:?} at {shape:?}");
    if let Some(at) = decoded.iter().position(|v| !v.is_finite()) {
        panic!("{desc:?} decoded a non-finite value at {at}");
    }
    if shared.is_none() {
        let mut encoder = Encoder::per_step(desc).expect("a codec that decoded encodes");
        let again = encoder
            .encode_bytes(&decoded, shape)
            .expect("a decoded tensor re-encodes");
        let twice = codec::decode(desc, shape, &again).expect("a fresh encoding decodes");
        assert_eq!(twice.len(), rows * cols);
    }
});
