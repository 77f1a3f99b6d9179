use super::*;
use crate::wire::CodecDesc;

fn all_codecs() -> Vec<CodecDesc> {
    let mut codecs = vec![
        CodecDesc::Identity,
        CodecDesc::F16,
        CodecDesc::Int8 { block: 0 },
        CodecDesc::Int8 { block: 64 },
        CodecDesc::TopK { ratio_ppm: 100_000 },
        CodecDesc::Dct { keep_ppm: 250_000 },
    ];
    for bits in [32, 16, 8] {
        codecs.push(CodecDesc::LowRank {
            rank: 4,
            power_iters: 2,
            factor_bits: bits,
        });
    }
    codecs
}

fn data(shape: Shape, seed: u32) -> Vec<f32> {
    (0..shape.rows * shape.cols)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 100.0 - 5.0)
        .collect()
}

/// A rank-`k` matrix: sum of k outer products.
fn low_rank(shape: Shape, k: usize) -> Vec<f32> {
    let mut h = vec![0.0; shape.rows * shape.cols];
    for t in 0..k {
        for i in 0..shape.rows {
            let a = ((i * 7 + t * 13) % 17) as f32 - 8.0;
            for j in 0..shape.cols {
                let b = ((j * 5 + t * 3) % 11) as f32 - 5.0;
                h[i * shape.cols + j] += a * b / (t + 1) as f32;
            }
        }
    }
    h
}

#[test]
fn every_codec_round_trips_awkward_shapes_with_exact_sizes() {
    for shape in [
        Shape::new(0, 0),
        Shape::new(0, 7),
        Shape::new(1, 1),
        Shape::new(3, 5),
        Shape::new(13, 7),
        Shape::new(66, 31),
    ] {
        for desc in all_codecs() {
            let h = data(shape, 9);
            let (bytes, report) = Encoder::new(desc).unwrap().encode(&h, shape).unwrap();
            if let Some(len) = encoded_len(desc, shape) {
                assert_eq!(bytes.len(), len, "{desc:?} {shape:?}");
            }
            // The bound a receiver checks before reading holds for every codec.
            let bound = max_encoded_len(desc, shape).expect("every codec here has a bound");
            assert!(bytes.len() <= bound, "{desc:?} {shape:?}");
            assert_eq!(report.bytes, bytes.len());
            let back = decode(desc, shape, &bytes).unwrap();
            assert_eq!(back.len(), h.len(), "{desc:?} {shape:?}");
            let bound = match desc {
                CodecDesc::Identity => 0.0,
                CodecDesc::F16 => 1e-3,
                CodecDesc::Int8 { .. } => 0.02,
                CodecDesc::LowRank { factor_bits: 8, .. } => 1.0,
                _ => 1.0,
            };
            assert!(
                report.rel_error <= bound,
                "{desc:?} {shape:?}: {}",
                report.rel_error
            );
        }
    }
}

#[test]
fn all_zero_input_decodes_to_zeros() {
    let shape = Shape::new(9, 10);
    let h = vec![0.0; 90];
    for desc in all_codecs() {
        let (bytes, report) = Encoder::new(desc).unwrap().encode(&h, shape).unwrap();
        assert_eq!(decode(desc, shape, &bytes).unwrap(), h, "{desc:?}");
        assert_eq!(report.rel_error, 0.0, "{desc:?}");
    }
}

#[test]
fn lowrank_reconstructs_a_matrix_of_known_rank() {
    let shape = Shape::new(200, 48);
    for k in [1, 3, 8] {
        let h = low_rank(shape, k);
        let desc = CodecDesc::LowRank {
            rank: 8,
            power_iters: 1,
            factor_bits: 32,
        };
        let (_, report) = Encoder::new(desc).unwrap().encode(&h, shape).unwrap();
        assert!(report.rel_error < 1e-4, "rank {k}: {}", report.rel_error);
        // At 8 bits (decoded by the fused int8 reconstruction) only the factors'
        // quantisation error remains: about 1/254 of each block's largest value.
        let desc = CodecDesc::LowRank {
            rank: 8,
            power_iters: 1,
            factor_bits: 8,
        };
        let (bytes, report) = Encoder::new(desc).unwrap().encode(&h, shape).unwrap();
        assert!(
            report.rel_error < 0.02,
            "rank {k}, 8 bits: {}",
            report.rel_error
        );
        let back = decode(desc, shape, &bytes).unwrap();
        let err = h
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt()
            / h.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!(
            (f64::from(err) - report.rel_error).abs() < 1e-4,
            "{err} vs {}",
            report.rel_error
        );
    }
}

#[test]
fn lowrank_error_falls_with_rank_and_warm_start_helps() {
    let shape = Shape::new(256, 64);
    let h = data(shape, 3);
    let mut last = f64::INFINITY;
    for rank in [1u16, 4, 16, 64] {
        let desc = CodecDesc::LowRank {
            rank,
            power_iters: 2,
            factor_bits: 32,
        };
        let (_, report) = Encoder::new(desc).unwrap().encode(&h, shape).unwrap();
        assert!(
            report.rel_error < last,
            "rank {rank}: {} >= {last}",
            report.rel_error
        );
        last = report.rel_error;
    }
    assert!(last < 1e-4, "full rank reconstructs: {last}");
    // Warm start: repeated one-iteration encodes of the same H converge (subspace
    // iteration continues across steps).
    let desc = CodecDesc::LowRank {
        rank: 4,
        power_iters: 1,
        factor_bits: 32,
    };
    let mut encoder = Encoder::new(desc).unwrap();
    let first = encoder.encode(&h, shape).unwrap().1.rel_error;
    let later = (0..5)
        .map(|_| encoder.encode(&h, shape).unwrap().1.rel_error)
        .last()
        .unwrap();
    assert!(later <= first, "{later} > {first}");
}

#[test]
fn topk_error_feedback_sends_everything_eventually() {
    let shape = Shape::new(1, 100);
    let h = data(shape, 5);
    let mut encoder = Encoder::new(CodecDesc::TopK { ratio_ppm: 100_000 }).unwrap();
    let mut total = vec![0.0f32; 100];
    // Send h once, then zeros: the residual drains 10 entries per step.
    for step in 0..10 {
        let input = if step == 0 { h.clone() } else { vec![0.0; 100] };
        let (bytes, _) = encoder.encode(&input, shape).unwrap();
        let back = decode(encoder.desc(), shape, &bytes).unwrap();
        for (t, b) in total.iter_mut().zip(back) {
            *t += b;
        }
    }
    assert_eq!(total, h);
}

#[test]
fn a_per_step_topk_encoder_carries_nothing_into_the_next_tensor() {
    let shape = Shape::new(1, 100);
    let desc = CodecDesc::TopK { ratio_ppm: 100_000 };
    let (first, second) = (data(shape, 5), data(shape, 6));
    // What a fresh encoder sends for the second tensor alone.
    let alone = Encoder::new(desc)
        .unwrap()
        .encode_bytes(&second, shape)
        .unwrap();
    let mut per_step = Encoder::per_step(desc).unwrap();
    per_step.encode_bytes(&first, shape).unwrap();
    assert_eq!(per_step.encode_bytes(&second, shape).unwrap(), alone);
    assert!(per_step.memory().residual.iter().all(|r| *r == 0.0));
    // With error feedback the first tensor's leftovers change what the second sends.
    let mut feedback = Encoder::new(desc).unwrap();
    feedback.encode_bytes(&first, shape).unwrap();
    assert_ne!(feedback.encode_bytes(&second, shape).unwrap(), alone);
}

#[test]
fn non_finite_input_is_refused() {
    let shape = Shape::new(2, 2);
    for desc in all_codecs() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let h = [1.0, 2.0, bad, 4.0];
            assert_eq!(
                Encoder::new(desc).unwrap().encode(&h, shape).unwrap_err(),
                CodecError::NonFinite { at: 2 },
                "{desc:?}"
            );
        }
    }
}

#[test]
fn damaged_buffers_are_typed_errors() {
    let shape = Shape::new(13, 7);
    let h = data(shape, 1);
    for desc in all_codecs() {
        let (bytes, _) = Encoder::new(desc).unwrap().encode(&h, shape).unwrap();
        let truncated = decode(desc, shape, &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(
            matches!(
                truncated,
                CodecError::Truncated { .. } | CodecError::Inconsistent(_)
            ),
            "{desc:?}: {truncated:?}"
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(
            matches!(
                decode(desc, shape, &long),
                Err(CodecError::Oversized { .. })
            ),
            "{desc:?}"
        );
        // The same bytes read as another shape are inconsistent with it.
        assert!(
            decode(desc, Shape::new(13, 11), &bytes).is_err(),
            "{desc:?}"
        );
    }
    // A NaN smuggled into an Identity buffer, a -128 int8 code, a TopK index past the end.
    let mut nan = Encoder::new(CodecDesc::Identity)
        .unwrap()
        .encode(&h, shape)
        .unwrap()
        .0;
    nan[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        decode(CodecDesc::Identity, shape, &nan),
        Err(CodecError::Inconsistent(_))
    ));
    let int8 = CodecDesc::Int8 { block: 0 };
    let mut codes = Encoder::new(int8).unwrap().encode(&h, shape).unwrap().0;
    let last = codes.len() - 1;
    codes[last] = 0x80;
    assert!(matches!(
        decode(int8, shape, &codes),
        Err(CodecError::Inconsistent(_))
    ));
    let topk = CodecDesc::TopK { ratio_ppm: 1 };
    let mut far = vec![0xff, 0x01]; // index 255 of 91
    far.extend_from_slice(&1.0f32.to_le_bytes());
    assert!(matches!(
        decode(topk, shape, &far),
        Err(CodecError::Inconsistent(_))
    ));
    // Nine bytes cannot hold the 16M entries a 100% TopK of a 16M-value shape announces:
    // refused by their size before anything is reserved for the entries.
    let wide = Shape::new(1 << 14, 1 << 10);
    let all = CodecDesc::TopK {
        ratio_ppm: 1_000_000,
    };
    assert!(matches!(
        decode(all, wide, &[0; 9]),
        Err(CodecError::Truncated { .. })
    ));
    // Shapes past the element cap and unsupported parameters.
    let huge = Shape::new(1 << 20, 1 << 20);
    assert_eq!(
        decode(CodecDesc::F16, huge, &[]),
        Err(CodecError::ShapeTooLarge(huge))
    );
    let bad = CodecDesc::LowRank {
        rank: 65,
        power_iters: 1,
        factor_bits: 8,
    };
    assert!(matches!(Encoder::new(bad), Err(CodecError::Unsupported(_))));
}

#[test]
fn chooser_honours_an_error_bound_and_a_budget() {
    let shape = Shape::new(128, 32);
    let h = low_rank(shape, 6);
    let ladder = lowrank_ladder(2, 32);
    let (desc, bytes, report) = choose(&h, shape, Target::RelError(1e-3), &ladder).unwrap();
    assert!(report.rel_error <= 1e-3);
    assert_eq!(
        desc,
        CodecDesc::LowRank {
            rank: 8,
            power_iters: 2,
            factor_bits: 32
        },
        "the smallest rank >= 6 on the ladder"
    );
    assert_eq!(bytes.len(), report.bytes);
    let budget = encoded_len(ladder[2], shape).unwrap();
    let (desc, _, report) = choose(&h, shape, Target::Bytes(budget), &ladder).unwrap();
    assert_eq!(desc, ladder[2]);
    assert!(report.bytes <= budget);
    let noise = data(shape, 4);
    assert!(matches!(
        choose(&noise, shape, Target::RelError(1e-6), &ladder[..3]),
        Err(CodecError::TargetUnreachable { .. })
    ));
}

#[test]
fn encode_bytes_sends_what_encode_sends_step_after_step() {
    // Stateful codecs (LowRank's warm start, TopK's residual) must evolve the same way
    // whether or not the sender asks for the report.
    let shape = Shape::new(40, 24);
    for desc in all_codecs() {
        let (mut measured, mut plain) = (Encoder::new(desc).unwrap(), Encoder::new(desc).unwrap());
        for step in 0..3 {
            let h = data(shape, 20 + step);
            let (bytes, _) = measured.encode(&h, shape).unwrap();
            assert_eq!(
                plain.encode_bytes(&h, shape).unwrap(),
                bytes,
                "{desc:?} step {step}"
            );
        }
    }
}

#[test]
fn a_decode_whose_values_overflow_is_refused() {
    // Finite factors whose product is not: P Q^T = 3e38 x 3e38 (the codec_decode fuzz
    // target found such a low-rank payload at 8 bits).
    let desc = CodecDesc::LowRank {
        rank: 1,
        power_iters: 0,
        factor_bits: 32,
    };
    let bytes: Vec<u8> = [3e38f32, 3e38]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert!(matches!(
        decode(desc, Shape::new(1, 1), &bytes),
        Err(CodecError::NonFinite { at: 0 })
    ));
    // The same factors at a representable scale decode.
    let bytes: Vec<u8> = [3e18f32, 3e18]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let decoded = decode(desc, Shape::new(1, 1), &bytes).unwrap();
    assert!((decoded[0] / 9e36 - 1.0).abs() < 1e-6, "{decoded:?}");
}
