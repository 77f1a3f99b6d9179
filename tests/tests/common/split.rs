//! Split fine-tuning fixtures: a tiny review set and the model-cache check.

use tandem_runtime::data::rotten_tomatoes::{Review, RottenTomatoes};
use tandem_runtime::model::minilm::{self, ModelError, TextTokenizer};

/// Eight short reviews, half fresh: the whole training set is one batch, so the loss
/// of that batch must fall as the halves train.
pub fn tiny_data() -> RottenTomatoes {
    let review = |text: &str, label| Review {
        text: text.into(),
        label,
        movie: "m".into(),
    };
    let train = vec![
        review("a gorgeous, witty, seductive movie.", 1),
        review("the acting is dreadful and the plot is dull.", 0),
        review("one of the best films of the year.", 1),
        review("a tedious, lifeless mess.", 0),
        review("charming and funny from start to finish.", 1),
        review("it never rises above its silly premise.", 0),
        review("a moving, beautifully made story.", 1),
        review("boring, predictable and far too long.", 0),
    ];
    RottenTomatoes {
        dev: train[..4].to_vec(),
        test: train[4..].to_vec(),
        train,
    }
}

/// Whether the model is cached (else a skip note, or a failure in CI).
pub fn model_cached() -> bool {
    match TextTokenizer::load(&minilm::model_dir(), 32) {
        Err(ModelError::Missing { path }) => {
            tandem_runtime::paths::skip_missing_cache(path.display());
            false
        }
        other => other.map(|_| true).unwrap(),
    }
}
