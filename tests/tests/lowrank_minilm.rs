//! LowRank on real transformer activations: MiniLM hidden states of 32 Rotten Tomatoes
//! reviews after layers 1 and 3 (padding dropped). Their spectrum is flat, so the
//! error is large at small ranks; what must hold is that it is reported honestly and
//! falls monotonically as the rank grows. Skipped (with a message) when the model or
//! the corpus is not cached.
#![cfg(feature = "model")]

use tandem_runtime::codec::{Encoder, Shape};
use tandem_runtime::data::rotten_tomatoes::{self, DataError, RottenTomatoes};
use tandem_runtime::model::ComputeBackend;
use tandem_runtime::model::minilm::{MiniLm, ModelError, TextTokenizer, model_dir};
use tandem_runtime::model::split::{CutForm, split, tokens};
use tandem_runtime::wire::CodecDesc;

const REVIEWS: usize = 32;
const RANKS: [u16; 6] = [2, 4, 8, 16, 32, 64];

/// The hidden states after `cut` layers, one row per real token.
fn hidden_states(cut: usize) -> Option<(Vec<f32>, Shape)> {
    let dir = model_dir();
    let data = match RottenTomatoes::load(&rotten_tomatoes::default_path()) {
        Err(e @ DataError::Missing { .. }) => {
            tandem_runtime::paths::skip_missing_cache(e);
            return None;
        }
        other => other.unwrap(),
    };
    let tokenizer = match TextTokenizer::load(&dir, 128) {
        Err(e @ ModelError::Missing { .. }) => {
            tandem_runtime::paths::skip_missing_cache(e);
            return None;
        }
        other => other.unwrap(),
    };
    let device = ComputeBackend::Flex.device();
    let model = MiniLm::load(&dir, &device).unwrap();
    let (bottom, _top) = split(model, cut, CutForm::Hidden, 2, &device).unwrap();
    let texts: Vec<&str> = data.train[..REVIEWS]
        .iter()
        .map(|r| r.text.as_str())
        .collect();
    let batch = tokenizer.batch(&texts).unwrap();
    let hidden = bottom.forward(&batch, &device);
    let width = hidden.dims()[2];
    let padded: Vec<f32> = hidden.into_data().try_to_vec().unwrap();
    let rows = tokens::pack(&padded, &batch.seq_lens, batch.seq, width);
    let shape = Shape::new(rows.len() / width, width);
    Some((rows, shape))
}

#[test]
fn lowrank_error_falls_with_rank_on_minilm_activations() {
    for cut in [1, 3] {
        let Some((h, shape)) = hidden_states(cut) else {
            return;
        };
        assert!(shape.rows > 200 && shape.cols == 384, "{shape:?}");
        let mut errors = Vec::new();
        for rank in RANKS {
            let desc = CodecDesc::LowRank {
                rank,
                power_iters: 2,
                factor_bits: 32,
            };
            let (_, report) = Encoder::new(desc).unwrap().encode(&h, shape).unwrap();
            errors.push(report.rel_error);
        }
        eprintln!(
            "after layer {cut}, {} tokens x {}: relative error by rank {:?}: {:?}",
            shape.rows,
            shape.cols,
            RANKS,
            errors.iter().map(|e| format!("{e:.3}")).collect::<Vec<_>>()
        );
        for (pair, ranks) in errors.windows(2).zip(RANKS.windows(2)) {
            assert!(
                pair[1] < pair[0],
                "layer {cut}: rank {} error {} is not below rank {} error {}",
                ranks[1],
                pair[1],
                ranks[0],
                pair[0]
            );
        }
        // The spectrum is flat, but not white: rank 64 of 384 keeps more than half.
        assert!(errors[5] < 0.7 && errors[0] > 0.5, "{errors:?}");
    }
}
