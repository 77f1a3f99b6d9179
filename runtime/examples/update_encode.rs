//! One federated update of LeNet-5 (`fmnist`, 61,706 parameters) encoded once, for
//! counting instructions under qemu (`cargo xtask bench fl-codec-insns`):
//! `update_encode <none|CODEC>`, CODEC one of identity, f16, int8, topk, lowrank, dct, acp.
//!
//! The set-up (a pseudo-random delta of LeNet-5's layout, N(0, 0.01^2), and ACP's shared
//! factors) runs for every argument, `none` included, so `CODEC` minus `none` is the
//! encode alone: a fresh encoder (no error feedback or warm start yet) and its bytes.
//! Prints the encoded length so nothing is elided.

use std::process::ExitCode;
use tandem_runtime::fl::Layout;
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::fl::update::UpdateEncoder;
use tandem_runtime::rng::SplitMix64;
use tandem_runtime::wire::CodecDesc;

const USAGE: &str = "usage: update_encode <none|identity|f16|int8|topk|lowrank|dct|acp>";

/// The codecs `bench fl-codec-insns` counts, at the settings of `bench fl`.
fn codec(name: &str) -> Option<CodecDesc> {
    Some(match name {
        "identity" => CodecDesc::Identity,
        "f16" => CodecDesc::F16,
        "int8" => CodecDesc::Int8 { block: 64 },
        "topk" => CodecDesc::TopK { ratio_ppm: 10_000 },
        "lowrank" => CodecDesc::LowRank {
            rank: 4,
            power_iters: 2,
            factor_bits: 8,
        },
        "dct" => CodecDesc::Dct { keep_ppm: 100_000 },
        "acp" => CodecDesc::Acp {
            rank: 4,
            factor_bits: 8,
        },
        _ => return None,
    })
}

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let desc = match name.as_str() {
        "none" => None,
        other => match codec(other) {
            Some(desc) => Some(desc),
            None => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    let layout = Layout::lenet5();
    let mut rng = SplitMix64::new(7);
    let delta: Vec<f32> = (0..layout.len())
        .map(|_| (rng.normal() * 0.01) as f32)
        .collect();
    let acp = codec("acp").expect("acp is a codec");
    let shared = SharedFactors::initial(&layout, acp, 1).expect("an ACP codec");
    let set_up = std::hint::black_box(&delta).len() + shared.to_bytes().len();
    let Some(desc) = desc else {
        println!("{set_up}");
        return ExitCode::SUCCESS;
    };
    let encoded =
        UpdateEncoder::new(layout, desc).and_then(|mut e| e.encode_shared(&delta, Some(&shared)));
    match encoded {
        Ok(bytes) => {
            println!("{set_up} {}", std::hint::black_box(bytes).len());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("update_encode: {err}");
            ExitCode::FAILURE
        }
    }
}
