//! The `sentiment` task: all-MiniLM-L6-v2 fine-tuned with LoRA adapters on its attention's
//! query and value projections (every layer, rank <= 16) and a linear head on the mean
//! of its last hidden states, on Rotten Tomatoes (fresh or rotten). Each client holds the
//! reviews of one movie, the corpus's natural non-IID partition ([`by_movie`]).
//!
//! Local training adjusts the logits by the training data's own label shares (Menon et
//! al. 2021's logit adjustment; FedLC's remedy for label skew across clients): the loss is
//! the cross-entropy of `logits + log(prior)`, so the head learns the class-balanced
//! score, and a movie whose reviews are mostly fresh no longer drags every model's bias
//! towards "fresh". Evaluation predicts from the balanced logits.
//!
//! Only the adapters and the head are the task's [`Layout`]: they are what trains, what
//! the codecs compress and what travels. The pretrained weights stay frozen on every
//! side, loaded once per process from the cache.

use super::Layout;
use super::local_sgd;
use super::task::{Evaluation, LocalConfig, LocalResult, Task, TaskError};
use crate::data::rotten_tomatoes::Review;
use crate::model::minilm::lora::MAX_LORA_RANK;
use crate::model::minilm::{Batch, BertShape, MiniLm, ModelError, TextTokenizer, mean_pool};
use crate::model::params;
use crate::model::{ComputeBackend, with_device_rng};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use std::collections::BTreeMap;
use std::path::Path;

/// Tokens per review at most (`[CLS]` and `[SEP]` included), as in split fine-tuning.
pub const MAX_TOKENS: usize = 64;
/// Fresh and rotten.
pub const CLASSES: usize = 2;
/// The LoRA rank of networked runs (`serve --app fl` and `tandem fl`): the model's layout
/// depends on it, and devices and cloud agree on it by the task's name alone.
pub const NETWORK_RANK: usize = 8;
/// Reviews per evaluation batch (sorted by length first, so padding stays small).
const EVAL_BATCH: usize = 64;

/// Tokenized reviews: one client's, or an evaluation set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reviews {
    /// Token ids of each review.
    tokens: Vec<Vec<u32>>,
    /// 1 for fresh, 0 for rotten.
    labels: Vec<u8>,
}

impl Reviews {
    /// `reviews`, tokenized.
    pub fn tokenize<'a>(
        tokenizer: &TextTokenizer,
        reviews: impl IntoIterator<Item = &'a Review>,
    ) -> Result<Self, ModelError> {
        let mut out = Self::default();
        for review in reviews {
            out.tokens.push(tokenizer.ids(&review.text)?);
            out.labels.push(u8::from(review.label == 1));
        }
        Ok(out)
    }

    /// Reviews held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The log of each class's share (add-one smoothed): what local training adds to the
    /// logits ([`Sentiment`]'s logit adjustment).
    fn log_prior(&self) -> [f32; CLASSES] {
        let fresh = self.labels.iter().filter(|&&l| l == 1).count() as f32;
        let all = self.len() as f32;
        [
            ((all - fresh + 1.0) / (all + 2.0)).ln(),
            ((fresh + 1.0) / (all + 2.0)).ln(),
        ]
    }

    /// The batch of the reviews at `indices` and their labels.
    fn batch(&self, indices: &[usize], device: &Device) -> (Batch, Tensor<1, Int>) {
        let rows: Vec<&[u32]> = indices.iter().map(|&i| self.tokens[i].as_slice()).collect();
        let labels = indices.iter().map(|&i| i64::from(self.labels[i])).collect();
        (
            Batch::padded(&rows),
            Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
        )
    }
}

/// `reviews` grouped by movie, in movie-name order, tokenized: one client per movie.
pub fn by_movie(tokenizer: &TextTokenizer, reviews: &[Review]) -> Result<Vec<Reviews>, ModelError> {
    let mut movies: BTreeMap<&str, Vec<&Review>> = BTreeMap::new();
    for review in reviews {
        movies.entry(&review.movie).or_default().push(review);
    }
    movies
        .into_values()
        .map(|reviews| Reviews::tokenize(tokenizer, reviews))
        .collect()
}

/// The reviews of client `index` of `of` when the movies of `reviews`, in name order, are
/// dealt out in turn (movie `m` to client `m % of`): with one client per movie, client
/// `i` holds [`by_movie`]'s `i`-th movie.
pub fn movies_of(reviews: &[Review], index: usize, of: usize) -> impl Iterator<Item = &Review> {
    let names: std::collections::BTreeSet<&str> =
        reviews.iter().map(|r| r.movie.as_str()).collect();
    let mine: std::collections::HashSet<&str> = names
        .into_iter()
        .enumerate()
        .filter(|(m, _)| m % of.max(1) == index)
        .map(|(_, name)| name)
        .collect();
    reviews
        .iter()
        .filter(move |r| mine.contains(r.movie.as_str()))
}

/// The trained model: the frozen MiniLM with its adapters, and the head.
#[derive(Module, Debug)]
struct Classifier {
    minilm: MiniLm,
    head: Linear,
}

impl Classifier {
    /// Logits `[batch, 2]`.
    fn forward(&self, batch: &Batch, device: &Device) -> Tensor<2> {
        let hidden = self.minilm.forward(batch, device);
        self.head.forward(mean_pool(hidden, &batch.seq_lens))
    }
}

/// The parameters that train and travel: LoRA's factors and the head.
fn trainable(path: &str) -> bool {
    path.starts_with("head.") || path.contains("_lora.")
}

/// MiniLM + LoRA on Rotten Tomatoes.
pub struct Sentiment {
    backend: ComputeBackend,
    rank: usize,
    /// The pretrained model on the training device, frozen.
    frozen: MiniLm,
    /// The same on the inference device.
    frozen_eval: MiniLm,
    layout: Layout,
}

impl Sentiment {
    /// Loads the pretrained model from `dir` for adapters of `rank` (1..=16).
    pub fn load(backend: ComputeBackend, dir: &Path, rank: usize) -> Result<Self, TaskError> {
        if !(1..=MAX_LORA_RANK).contains(&rank) {
            return Err(TaskError::Config(format!(
                "LoRA rank {rank} is not in 1..={MAX_LORA_RANK}"
            )));
        }
        let model = |device: &Device| {
            MiniLm::load(dir, device)
                .map(Module::no_grad)
                .map_err(|e| TaskError::Config(e.to_string()))
        };
        let frozen = model(&backend.training_device())?;
        let frozen_eval = model(&backend.device())?;
        let device = backend.device();
        let fresh = with_device_rng(|| fresh(&frozen_eval, rank, &device));
        Ok(Self {
            backend,
            rank,
            frozen,
            frozen_eval,
            layout: params::layout_where(&fresh, &trainable),
        })
    }

    /// The task at `rank` and the model's tokenizer (reviews cut at [`MAX_TOKENS`]), both
    /// from the cache's model directory: what every command that runs the task loads.
    pub fn load_cached(
        backend: ComputeBackend,
        rank: usize,
    ) -> Result<(Self, TextTokenizer), TaskError> {
        let dir = crate::model::minilm::model_dir();
        let task = Self::load(backend, &dir, rank)?;
        let tokenizer =
            TextTokenizer::load(&dir, MAX_TOKENS).map_err(|e| TaskError::Config(e.to_string()))?;
        Ok((task, tokenizer))
    }

    /// `base` with the adapters and head of `weights`.
    fn classifier(
        &self,
        base: &MiniLm,
        weights: &[f32],
        device: &Device,
    ) -> Result<Classifier, TaskError> {
        if weights.len() != self.layout.len() {
            return Err(TaskError::Layout {
                expected: self.layout.len(),
                got: weights.len(),
            });
        }
        let fresh = with_device_rng(|| fresh(base, self.rank, device));
        Ok(params::load_where(fresh, weights, &trainable))
    }
}

/// `base` with fresh adapters (query and value, every layer) and a fresh head. Draws
/// from burn's generator: call it inside [`with_device_rng`].
fn fresh(base: &MiniLm, rank: usize, device: &Device) -> Classifier {
    let mut minilm = base.clone();
    let alpha = 2.0 * rank as f64;
    minilm.encoder.layer = minilm
        .encoder
        .layer
        .into_iter()
        .map(|layer| layer.attach_lora(rank, alpha, device))
        .collect();
    Classifier {
        minilm,
        head: LinearConfig::new(BertShape::MINILM_L6.hidden, CLASSES).init(device),
    }
}

impl Task for Sentiment {
    type Data = Reviews;

    fn name(&self) -> &'static str {
        "sentiment"
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn initial_weights(&self, seed: u64) -> Vec<f32> {
        let device = self.backend.device();
        let fresh = with_device_rng(|| {
            device.seed(seed);
            fresh(&self.frozen_eval, self.rank, &device)
        });
        params::flatten_where(&fresh, &trainable)
    }

    fn examples(&self, data: &Reviews) -> u64 {
        data.len() as u64
    }

    fn train(
        &self,
        global: &[f32],
        data: &Reviews,
        config: &LocalConfig,
        seed: u64,
    ) -> Result<LocalResult, TaskError> {
        let device = self.backend.training_device();
        let model = self.classifier(&self.frozen, global, &device)?;
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let log_prior =
            Tensor::<1>::from_floats(data.log_prior().as_slice(), &device).reshape([1, CLASSES]);
        let trained = local_sgd::train(
            model,
            data.len(),
            config,
            seed,
            global,
            &trainable,
            |model, indices| {
                let (batch, labels) = data.batch(indices, &device);
                let logits = model.forward(&batch, &device) + log_prior.clone();
                loss_fn.forward(logits, labels)
            },
        )?;
        Ok(LocalResult {
            weights: params::flatten_where(&trained.model, &trainable),
            examples: data.len() as u64,
            loss: trained.loss,
            steps: trained.steps,
        })
    }

    fn evaluate(&self, weights: &[f32], data: &Reviews) -> Result<Evaluation, TaskError> {
        let device = self.backend.device();
        let model = self.classifier(&self.frozen_eval, weights, &device)?;
        let mut by_length: Vec<usize> = (0..data.len()).collect();
        by_length.sort_by_key(|&i| data.tokens[i].len());
        local_sgd::evaluate(
            &by_length,
            EVAL_BATCH,
            CLASSES,
            |indices| model.forward(&data.batch(indices, &device).0, &device),
            |i| usize::from(data.labels[i]),
        )
    }

    fn pool(&self, parts: &[Reviews], order: &[(usize, usize)]) -> Reviews {
        let mut out = Reviews::default();
        for &(part, i) in order {
            out.tokens.push(parts[part].tokens[i].clone());
            out.labels.push(parts[part].labels[i]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rotten_tomatoes::{DataError, RottenTomatoes, default_path};
    use crate::model::minilm::model_dir;

    /// The task (rank 4) and the tokenizer, or `None` (noted) without the cached model.
    fn cached() -> Option<(Sentiment, TextTokenizer)> {
        let dir = model_dir();
        match (
            Sentiment::load(ComputeBackend::Flex, &dir, 4),
            TextTokenizer::load(&dir, MAX_TOKENS),
        ) {
            (Ok(task), Ok(tokenizer)) => Some((task, tokenizer)),
            (_, Err(ModelError::Missing { path })) => {
                crate::paths::skip_missing_cache(path.display());
                None
            }
            (Err(err), _) => panic!("{err}"),
            (_, Err(err)) => panic!("{err}"),
        }
    }

    fn review(text: &str, label: u32, movie: &str) -> Review {
        Review {
            text: text.into(),
            label,
            movie: movie.into(),
        }
    }

    #[test]
    fn only_the_adapters_and_the_head_travel() {
        let Some((task, _)) = cached() else { return };
        let layout = task.layout();
        // Per layer: query and value, each A (384 x 4) and B (4 x 384); head 384 x 2 + 2.
        assert_eq!(layout.len(), 6 * 2 * 2 * 384 * 4 + 384 * 2 + 2);
        assert_eq!(layout.specs().len(), 6 * 2 * 2 + 2);
        for spec in layout.specs() {
            assert!(
                spec.name.starts_with("head.") || spec.name.contains("_lora."),
                "{}",
                spec.name
            );
        }
        assert!(matches!(
            Sentiment::load(ComputeBackend::Flex, &model_dir(), 17),
            Err(TaskError::Config(_))
        ));
    }

    #[test]
    fn fresh_adapters_leave_the_pretrained_encoder_unchanged() {
        let Some((task, tokenizer)) = cached() else {
            return;
        };
        let device = ComputeBackend::Flex.device();
        let weights = task.initial_weights(3);
        let model = task
            .classifier(&task.frozen_eval, &weights, &device)
            .unwrap();
        let batch = tokenizer.batch(&["a warm, funny film.", "dull."]).unwrap();
        let plain = MiniLm::load(&model_dir(), &device).unwrap();
        let ours: Vec<f32> = model
            .minilm
            .forward(&batch, &device)
            .into_data()
            .try_to_vec()
            .unwrap();
        let theirs: Vec<f32> = plain
            .forward(&batch, &device)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(ours, theirs);
        // Trained weights move the encoder's output (the adapters are wired in).
        let moved: Vec<f32> = weights.iter().map(|w| w + 0.05).collect();
        let model = task.classifier(&task.frozen_eval, &moved, &device).unwrap();
        let changed: Vec<f32> = model
            .minilm
            .forward(&batch, &device)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(ours.iter().zip(&changed).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn reviews_group_by_movie_each_review_once() {
        let Some((_, tokenizer)) = cached() else {
            return;
        };
        let reviews = [
            review("good", 1, "b"),
            review("bad", 0, "a"),
            review("fine", 1, "b"),
        ];
        let clients = by_movie(&tokenizer, &reviews).unwrap();
        assert_eq!(clients.len(), 2);
        // Dealt out to two devices, each holds one movie, as by_movie orders them.
        let second: Vec<&str> = movies_of(&reviews, 1, 2).map(|r| r.text.as_str()).collect();
        assert_eq!(second, ["good", "fine"]);
        assert_eq!(movies_of(&reviews, 0, 1).count(), 3);
        assert_eq!(clients[0].labels, [0]);
        assert_eq!(clients[1].labels, [1, 1]);
        assert_eq!(clients[1].tokens[1], tokenizer.ids("fine").unwrap());
    }

    #[test]
    fn the_logit_adjustment_is_the_smoothed_log_label_share() {
        let reviews = Reviews {
            tokens: vec![vec![101, 102]; 4],
            labels: vec![1, 1, 1, 0],
        };
        let [rotten, fresh] = reviews.log_prior();
        assert!((rotten - (2.0f32 / 6.0).ln()).abs() < 1e-6);
        assert!((fresh - (4.0f32 / 6.0).ln()).abs() < 1e-6);
    }

    #[test]
    fn local_training_on_real_reviews_learns_them() {
        let Some((task, tokenizer)) = cached() else {
            return;
        };
        let data = match RottenTomatoes::load(&default_path()) {
            Err(DataError::Missing { path }) => {
                crate::paths::skip_missing_cache(path.display());
                return;
            }
            other => other.unwrap(),
        };
        let reviews = Reviews::tokenize(&tokenizer, data.train.iter().take(48)).unwrap();
        let global = task.initial_weights(1);
        let before = task.evaluate(&global, &reviews).unwrap();
        let config = LocalConfig {
            epochs: 4,
            batch: 8,
            lr: 0.05,
            momentum: 0.9,
            proximal_mu: 0.0,
            max_steps: None,
        };
        let trained = task.train(&global, &reviews, &config, 7).unwrap();
        assert_eq!((trained.steps, trained.examples), (24, 48));
        let after = task.evaluate(&trained.weights, &reviews).unwrap();
        eprintln!("before {before:?}, after {after:?}");
        assert!(after.loss < before.loss * 0.8, "{before:?} -> {after:?}");
        assert!(
            after.accuracy > before.accuracy.max(0.7),
            "{before:?} -> {after:?}"
        );
        // The same seed trains the same weights.
        assert_eq!(task.train(&global, &reviews, &config, 7).unwrap(), trained);
    }
}
