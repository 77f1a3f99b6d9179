//! all-MiniLM-L6-v2 (a 6-layer BERT, d = 384) in burn, loaded from the cached
//! safetensors, and split at a cut between device and cloud.

mod layers;
mod load;
pub mod lora;
mod tokenizer;

pub use layers::{BertShape, Embeddings, Layer, Pooler, mask_bias, mean_pool};
pub use load::{ModelError, model_dir};
pub use tokenizer::{Batch, TextTokenizer};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use std::path::Path;

/// The model's name on the wire.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// The encoder's layer stack (named `layer` as in the checkpoint).
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers, bottom first.
    pub layer: Vec<Layer>,
}

/// The whole pretrained model.
#[derive(Module, Debug)]
pub struct MiniLm {
    /// Token embeddings.
    pub embeddings: Embeddings,
    /// The transformer layers.
    pub encoder: Encoder,
    /// BERT's pooler (loaded, unused by mean pooling).
    pub pooler: Pooler,
}

impl MiniLm {
    /// A randomly initialised model of `shape` (for tests; real runs [`MiniLm::load`]).
    pub fn new(shape: &BertShape, device: &Device) -> Self {
        Self {
            embeddings: Embeddings::new(shape, device),
            encoder: Encoder {
                layer: (0..shape.layers)
                    .map(|_| Layer::new(shape, device))
                    .collect(),
            },
            pooler: Pooler::new(shape, device),
        }
    }

    /// Loads all-MiniLM-L6-v2 from `dir` (its `model.safetensors`), checking that every
    /// tensor of the checkpoint was applied.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        load::load(Self::new(&BertShape::MINILM_L6, device), dir)
    }

    /// Hidden states after every layer: `[batch, seq, d]`.
    pub fn forward(&self, batch: &Batch, device: &Device) -> Tensor<3> {
        let mask = mask_bias(&batch.seq_lens, batch.seq, device);
        let mut x = self.embeddings.forward(batch.ids_tensor(device));
        for layer in &self.encoder.layer {
            x = layer.forward(x, mask.clone());
        }
        x
    }

    /// Sentence embeddings as sentence-transformers computes them: mean of the last
    /// hidden states over real tokens, L2-normalised. `[batch, d]`.
    pub fn embed(&self, batch: &Batch, device: &Device) -> Tensor<2> {
        let pooled = mean_pool(self.forward(batch, device), &batch.seq_lens);
        let norm = pooled
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        pooled / norm
    }
}

impl Batch {
    /// The token ids as a `[batch, seq]` tensor.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(
            TensorData::new(self.ids.clone(), [self.seq_lens.len(), self.seq]),
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ComputeBackend;

    /// The model and tokenizer, or `None` (with a note) when the set-up step has not run.
    fn cached(device: &Device) -> Option<(MiniLm, TextTokenizer)> {
        let dir = model_dir();
        match (MiniLm::load(&dir, device), TextTokenizer::load(&dir, 128)) {
            (Ok(model), Ok(tokenizer)) => Some((model, tokenizer)),
            (Err(ModelError::Missing { path }), _) | (_, Err(ModelError::Missing { path })) => {
                crate::paths::skip_missing_cache(path.display());
                None
            }
            (Err(err), _) | (_, Err(err)) => panic!("{err}"),
        }
    }

    #[test]
    fn real_model_embeds_paraphrases_with_cosine_0_755() {
        let device = ComputeBackend::Flex.device();
        let Some((model, tokenizer)) = cached(&device) else {
            return;
        };
        let batch = tokenizer
            .batch(&["A man is eating food.", "A man is eating a piece of bread."])
            .unwrap();
        // Different lengths: the shorter sentence is padded, so the mask matters.
        assert_ne!(batch.seq_lens[0], batch.seq_lens[1]);
        let e: Vec<f32> = model
            .embed(&batch, &device)
            .into_data()
            .try_to_vec()
            .unwrap();
        let (a, b) = e.split_at(384);
        let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        eprintln!("cosine {cosine}");
        assert!((cosine - 0.755).abs() < 0.01, "cosine {cosine}");
    }

    #[test]
    fn missing_model_names_the_setup_command() {
        let dir = std::env::temp_dir().join("tandem-no-model-here");
        let err = MiniLm::load(&dir, &ComputeBackend::Flex.device()).unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }));
        assert!(err.to_string().contains("cargo xtask setup"), "{err}");
    }
}
