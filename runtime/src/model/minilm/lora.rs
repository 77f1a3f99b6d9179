//! LoRA adapters (Hu et al. 2021): a frozen projection `W` gains a trainable
//! low-rank update `(alpha / r) * B A`, with `B` starting at zero so training starts
//! from the pretrained model exactly.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// The most LoRA rank tandem allows (the bound; more is no longer "low").
pub const MAX_LORA_RANK: usize = 16;

/// A rank-`r` update `x -> (alpha / r) * B (A x)`.
#[derive(Module, Debug)]
pub struct Lora {
    down: Linear,
    up: Linear,
    scale: f64,
}

impl Lora {
    /// `A` (`inputs -> rank`) is Kaiming-uniform, `B` (`rank -> outputs`) zero.
    pub fn new(inputs: usize, outputs: usize, rank: usize, alpha: f64, device: &Device) -> Self {
        Self {
            down: LinearConfig::new(inputs, rank)
                .with_bias(false)
                .init(device),
            up: LinearConfig::new(rank, outputs)
                .with_bias(false)
                .with_initializer(Initializer::Zeros)
                .init(device),
            scale: alpha / rank as f64,
        }
    }

    /// The update for `x` (`[.., inputs]` -> `[.., outputs]`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.up.forward(self.down.forward(x)) * self.scale
    }
}
