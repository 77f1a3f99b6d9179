//! BERT building blocks of MiniLM, named after the Hugging Face tensors they load
//! (`attention.self` is `self_attn` here, `LayerNorm` is `layer_norm`; see
//! [`super::load`]).
//!
//! Dropout is left out: fine-tuning runs are short and deterministic runs compare
//! codecs more cleanly.

use super::lora::Lora;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor};

/// all-MiniLM-L6-v2's shape (its `config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BertShape {
    /// Token vocabulary.
    pub vocab: usize,
    /// Largest position.
    pub max_positions: usize,
    /// Hidden width `d`.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Encoder layers.
    pub layers: usize,
}

impl BertShape {
    /// all-MiniLM-L6-v2: 6 layers, d = 384, 12 heads, ff 1536.
    pub const MINILM_L6: Self = Self {
        vocab: 30522,
        max_positions: 512,
        hidden: 384,
        heads: 12,
        intermediate: 1536,
        layers: 6,
    };
}

/// BERT's layer-norm epsilon.
const LAYER_NORM_EPS: f64 = 1e-12;

/// Added to attention scores of padded keys: exp() of it is exactly 0 in f32.
const MASKED_SCORE: f32 = -1e9;

fn layer_norm(d: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d)
        .with_epsilon(LAYER_NORM_EPS)
        .init(device)
}

/// Word + position + token-type embeddings, then layer norm.
#[derive(Module, Debug)]
pub struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl Embeddings {
    pub(super) fn new(shape: &BertShape, device: &Device) -> Self {
        Self {
            word_embeddings: EmbeddingConfig::new(shape.vocab, shape.hidden).init(device),
            position_embeddings: EmbeddingConfig::new(shape.max_positions, shape.hidden)
                .init(device),
            token_type_embeddings: EmbeddingConfig::new(2, shape.hidden).init(device),
            layer_norm: layer_norm(shape.hidden, device),
        }
    }

    /// `ids`: `[batch, seq]` -> `[batch, seq, hidden]` (single-segment input).
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).reshape([1, seq]);
        let segments = Tensor::<2, Int>::zeros([1, seq], &device);
        let x = self.word_embeddings.forward(ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(segments);
        self.layer_norm.forward(x)
    }
}

/// Query, key and value projections, with optional LoRA adapters on query and value.
#[derive(Module, Debug)]
pub struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    query_lora: Option<Lora>,
    value_lora: Option<Lora>,
    heads: usize,
}

impl SelfAttention {
    fn new(shape: &BertShape, device: &Device) -> Self {
        let d = shape.hidden;
        Self {
            query: LinearConfig::new(d, d).init(device),
            key: LinearConfig::new(d, d).init(device),
            value: LinearConfig::new(d, d).init(device),
            query_lora: None,
            value_lora: None,
            heads: shape.heads,
        }
    }

    /// Scaled dot-product attention over `x` (`[batch, seq, d]`); `mask_bias` is
    /// `[batch, 1, 1, seq]`, 0 for real keys and very negative for padding.
    fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, d] = x.dims();
        let head_dim = d / self.heads;
        let project = |linear: &Linear, lora: &Option<Lora>| {
            let y = linear.forward(x.clone());
            let y = match lora {
                Some(lora) => y + lora.forward(x.clone()),
                None => y,
            };
            y.reshape([batch, seq, self.heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = project(&self.query, &self.query_lora);
        let k = project(&self.key, &None);
        let v = project(&self.value, &self.value_lora);
        let scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt() + mask_bias;
        let context = softmax(scores, 3).matmul(v);
        context.swap_dims(1, 2).reshape([batch, seq, d])
    }

    /// Adds fresh LoRA adapters of rank `rank` to the query and value projections
    /// (their output starts at zero, so the model is unchanged until trained).
    pub fn attach_lora(mut self, rank: usize, alpha: f64, device: &Device) -> Self {
        let d = self.query.weight.dims()[0];
        self.query_lora = Some(Lora::new(d, d, rank, alpha, device));
        self.value_lora = Some(Lora::new(d, d, rank, alpha, device));
        self
    }
}

/// Attention output projection, residual and layer norm.
#[derive(Module, Debug)]
pub struct AttentionOutput {
    dense: Linear,
    layer_norm: LayerNorm,
}

/// Self-attention and its output block.
#[derive(Module, Debug)]
pub struct Attention {
    self_attn: SelfAttention,
    output: AttentionOutput,
}

/// The feed-forward expansion (`d -> ff`, GELU).
#[derive(Module, Debug)]
pub struct Intermediate {
    dense: Linear,
}

/// The feed-forward contraction (`ff -> d`), residual and layer norm.
#[derive(Module, Debug)]
pub struct Output {
    /// `ff -> d`: the weight the SFT cut decomposes.
    pub dense: Linear,
    /// Post-residual layer norm.
    pub layer_norm: LayerNorm,
}

/// One transformer encoder layer.
#[derive(Module, Debug)]
pub struct Layer {
    attention: Attention,
    intermediate: Intermediate,
    /// Its feed-forward output block.
    pub output: Output,
}

impl Layer {
    pub(super) fn new(shape: &BertShape, device: &Device) -> Self {
        let d = shape.hidden;
        Self {
            attention: Attention {
                self_attn: SelfAttention::new(shape, device),
                output: AttentionOutput {
                    dense: LinearConfig::new(d, d).init(device),
                    layer_norm: layer_norm(d, device),
                },
            },
            intermediate: Intermediate {
                dense: LinearConfig::new(d, shape.intermediate).init(device),
            },
            output: Output {
                dense: LinearConfig::new(shape.intermediate, d).init(device),
                layer_norm: layer_norm(d, device),
            },
        }
    }

    /// The layer's attention block: self-attention, output projection, residual and
    /// layer norm (`[batch, seq, d]`, the feed-forward block's input and residual).
    pub fn forward_attention(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let context = self.attention.self_attn.forward(x.clone(), mask_bias);
        let out = &self.attention.output;
        out.layer_norm.forward(out.dense.forward(context) + x)
    }

    /// The feed-forward expansion of the attention block's output: GELU activations
    /// `[batch, seq, ff]`.
    pub fn expand(&self, attended: Tensor<3>) -> Tensor<3> {
        gelu(self.intermediate.dense.forward(attended))
    }

    /// The feed-forward expansion `d -> ff` (the weight the faithful SFT cut
    /// decomposes).
    pub fn expansion(&self) -> &Linear {
        &self.intermediate.dense
    }

    /// The whole layer: `[batch, seq, d]` -> `[batch, seq, d]`.
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let attended = self.forward_attention(x, mask_bias);
        let expanded = self.expand(attended.clone());
        self.output
            .layer_norm
            .forward(self.output.dense.forward(expanded) + attended)
    }

    /// The layer with LoRA adapters on its attention (see [`SelfAttention::attach_lora`]).
    pub fn attach_lora(mut self, rank: usize, alpha: f64, device: &Device) -> Self {
        self.attention.self_attn = self.attention.self_attn.attach_lora(rank, alpha, device);
        self
    }
}

/// BERT's pooler (dense + tanh over the first token). Loaded so every tensor of the
/// checkpoint is applied; sentence embeddings and the classifier use mean pooling.
#[derive(Module, Debug)]
pub struct Pooler {
    dense: Linear,
}

impl Pooler {
    pub(super) fn new(shape: &BertShape, device: &Device) -> Self {
        Self {
            dense: LinearConfig::new(shape.hidden, shape.hidden).init(device),
        }
    }
}

/// The additive attention mask for right-padded sequences: `[batch, 1, 1, seq]`, 0
/// where `position < seq_lens[b]`, very negative elsewhere.
pub fn mask_bias(seq_lens: &[usize], seq: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = seq_lens
        .iter()
        .flat_map(|&len| (0..seq).map(move |p| if p < len { 0.0 } else { MASKED_SCORE }))
        .collect();
    Tensor::<1>::from_floats(values.as_slice(), device).reshape([seq_lens.len(), 1, 1, seq])
}

/// Mean of the real (unpadded) token vectors of each sequence: `[batch, seq, d]` ->
/// `[batch, d]`.
pub fn mean_pool(hidden: Tensor<3>, seq_lens: &[usize]) -> Tensor<2> {
    let [batch, seq, d] = hidden.dims();
    let device = hidden.device();
    let weights: Vec<f32> = seq_lens
        .iter()
        .flat_map(|&len| {
            let w = 1.0 / len.max(1) as f32;
            (0..seq).map(move |p| if p < len { w } else { 0.0 })
        })
        .collect();
    let weights = Tensor::<1>::from_floats(weights.as_slice(), &device).reshape([batch, seq, 1]);
    (hidden * weights).sum_dim(1).reshape([batch, d])
}
