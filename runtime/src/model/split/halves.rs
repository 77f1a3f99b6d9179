//! The two halves of MiniLM at a cut: the device's [`Bottom`] (embeddings and layers
//! `0..cut`) and the cloud's [`Top`] (layers `cut..6`, mean pooling, a classifier).

use super::spec::{CutForm, SftWeight};
use crate::model::minilm::{Batch, Embeddings, Layer, MiniLm, mask_bias, mean_pool};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor, TensorData};
use tandem_kernels::linalg::truncated_svd;

/// Power iterations of the cut weight's truncated SVD: the leading singular values of
/// a 1536 x 384 weight are well separated, and 8 iterations match them to ~1e-4.
const SVD_POWER_ITERS: usize = 8;
/// The SVD's random start is fixed so device and cloud factor the weight identically.
const SVD_SEED: u64 = 0x5f7;

/// The device's end of an SFT cut: the down factor of the factored weight.
#[derive(Module, Debug)]
struct SftDown {
    /// `d -> rank` (W1) or `ff -> rank` (W2), no bias.
    down: Linear,
    #[module(skip)]
    weight: SftWeight,
}

/// Device half.
#[derive(Module, Debug)]
pub struct Bottom {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// SFT only: the last layer ends in this factor.
    sft: Option<SftDown>,
}

impl Bottom {
    /// What crosses the cut: `[batch, seq, width]`.
    pub fn forward(&self, batch: &Batch, device: &Device) -> Tensor<3> {
        let mask = mask_bias(&batch.seq_lens, batch.seq, device);
        let mut x = self.embeddings.forward(batch.ids_tensor(device));
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            if i == last
                && let Some(sft) = &self.sft
            {
                let attended = layer.forward_attention(x, mask);
                return sft.down.forward(match sft.weight {
                    SftWeight::W1 => attended,
                    SftWeight::W2 => layer.expand(attended),
                });
            }
            x = layer.forward(x, mask.clone());
        }
        x
    }

    /// The bottom with LoRA adapters on every layer's attention, everything else
    /// frozen.
    pub fn with_lora(self, rank: usize, alpha: f64, device: &Device) -> Self {
        let frozen = self.no_grad();
        Self {
            layers: frozen
                .layers
                .into_iter()
                .map(|layer| layer.attach_lora(rank, alpha, device))
                .collect(),
            ..frozen
        }
    }
}

/// The cloud's start of an SFT cut: the up factor (with the factored weight's bias),
/// for W1 GELU and the contraction `W2`, then the cut layer's output layer norm.
#[derive(Module, Debug)]
struct SftUp {
    up: Linear,
    /// W1 only: the cut layer's `W2`.
    contraction: Option<Linear>,
    norm: LayerNorm,
}

impl SftUp {
    /// The cut layer's output from the code `[batch, seq, rank]`.
    fn forward(&self, code: Tensor<3>) -> Tensor<3> {
        let x = self.up.forward(code);
        let x = match &self.contraction {
            Some(w2) => w2.forward(gelu(x)),
            None => x,
        };
        self.norm.forward(x)
    }
}

/// Cloud half.
#[derive(Module, Debug)]
pub struct Top {
    /// SFT only.
    sft: Option<SftUp>,
    layers: Vec<Layer>,
    head: Linear,
}

impl Top {
    /// Class logits `[batch, classes]` from the cut tensor `[batch, seq, width]`.
    pub fn forward(&self, cut: Tensor<3>, seq_lens: &[usize]) -> Tensor<2> {
        let [_, seq, _] = cut.dims();
        let mask = mask_bias(seq_lens, seq, &cut.device());
        let mut x = match &self.sft {
            Some(sft) => sft.forward(cut),
            None => cut,
        };
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        self.head.forward(mean_pool(x, seq_lens))
    }

    /// The top with its layers frozen and LoRA adapters on their attention; the SFT
    /// up-projection (if any) and the head still train.
    pub fn with_lora(self, rank: usize, alpha: f64, device: &Device) -> Self {
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|layer| layer.no_grad().attach_lora(rank, alpha, device))
                .collect(),
            ..self
        }
    }
}

/// Cuts `model` after `cut` layers (1..layers-1). The classifier head (`d -> classes`)
/// is initialised from `device`'s random state: seed it for reproducible runs.
pub fn split(
    model: MiniLm,
    cut: usize,
    form: CutForm,
    classes: usize,
    device: &Device,
) -> Result<(Bottom, Top), String> {
    let MiniLm {
        embeddings,
        encoder,
        ..
    } = model;
    let mut layers = encoder.layer;
    if !(1..layers.len()).contains(&cut) {
        return Err(format!("cut {cut} is not in 1..={}", layers.len() - 1));
    }
    let top_layers = layers.split_off(cut);
    let hidden = top_layers[0].output.dense.weight.dims()[1];
    let (sft_down, sft_up) = match form {
        CutForm::Hidden => (None, None),
        CutForm::Sft { rank, weight } => {
            let layer = &layers[cut - 1];
            let output = &layer.output;
            let (factored, contraction, singular_power) = match weight {
                // The authors' split: all of S on the device's side.
                SftWeight::W1 => (layer.expansion(), Some(output.dense.clone()), 1.0),
                SftWeight::W2 => (&output.dense, None, 0.5),
            };
            let (down, up) = factorize(factored, rank, singular_power, device)?;
            (
                Some(SftDown { down, weight }),
                Some(SftUp {
                    up,
                    contraction,
                    norm: output.layer_norm.clone(),
                }),
            )
        }
    };
    let bottom = Bottom {
        embeddings,
        layers,
        sft: sft_down,
    };
    let top = Top {
        sft: sft_up,
        layers: top_layers,
        head: LinearConfig::new(hidden, classes).init(device),
    };
    Ok((bottom, top))
}

/// `W` (`in x out`, burn's layout) ~ `D U` from a truncated SVD `W ~ U_r S_r V_r^T` on
/// tandem's kernels: `D = U_r S_r^p` (`in x rank`, no bias) and
/// `U = S_r^(1-p) V_r^T` (`rank x out`, `W`'s bias), `p` = `singular_power`.
fn factorize(
    linear: &Linear,
    rank: usize,
    singular_power: f32,
    device: &Device,
) -> Result<(Linear, Linear), String> {
    let [inputs, outputs] = linear.weight.dims();
    let w: Vec<f32> = linear
        .weight
        .val()
        .into_data()
        .try_to_vec()
        .map_err(|e| format!("cut weight: {e:?}"))?;
    let svd = truncated_svd(&w, inputs, outputs, rank, SVD_POWER_ITERS, SVD_SEED)
        .map_err(|e| format!("SVD of the cut weight: {e}"))?;
    let down_scale: Vec<f32> = svd.s.iter().map(|s| s.powf(singular_power)).collect();
    let up_scale: Vec<f32> = svd.s.iter().map(|s| s.powf(1.0 - singular_power)).collect();
    let down: Vec<f32> = (0..inputs * rank)
        .map(|i| svd.u[i] * down_scale[i % rank])
        .collect();
    let up: Vec<f32> = (0..rank * outputs)
        .map(|i| up_scale[i / outputs] * svd.v[(i % outputs) * rank + i / outputs])
        .collect();
    let param = |values: Vec<f32>, shape: [usize; 2]| {
        Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(values, shape),
            device,
        ))
    };
    Ok((
        Linear {
            weight: param(down, [inputs, rank]),
            bias: None,
        },
        Linear {
            weight: param(up, [rank, outputs]),
            bias: linear.bias.clone(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ComputeBackend;
    use crate::model::minilm::BertShape;

    fn tiny() -> BertShape {
        BertShape {
            vocab: 50,
            max_positions: 16,
            hidden: 16,
            heads: 2,
            intermediate: 32,
            layers: 3,
        }
    }

    fn batch() -> Batch {
        Batch {
            ids: vec![1, 5, 7, 2, 1, 9, 0, 0],
            seq_lens: vec![4, 2],
            seq: 4,
        }
    }

    #[test]
    fn hidden_split_composes_to_the_whole_encoder() {
        let device = ComputeBackend::Flex.device();
        let model = MiniLm::new(&tiny(), &device);
        let whole: Vec<f32> = model
            .forward(&batch(), &device)
            .into_data()
            .try_to_vec()
            .unwrap();
        let (bottom, top) = split(model, 2, CutForm::Hidden, 2, &device).unwrap();
        let cut = bottom.forward(&batch(), &device);
        assert_eq!(cut.dims(), [2, 4, 16]);
        // The top's first layer continues from the cut: run it by hand.
        let mask = mask_bias(&[4, 2], 4, &device);
        let after: Vec<f32> = top.layers[0]
            .forward(cut, mask)
            .into_data()
            .try_to_vec()
            .unwrap();
        for (a, b) in whole.iter().zip(&after).take(4 * 16) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    #[test]
    fn sft_at_full_rank_reproduces_the_cut_layer_without_its_residual() {
        let device = ComputeBackend::Flex.device();
        let b = batch();
        for weight in [SftWeight::W1, SftWeight::W2] {
            let model = MiniLm::new(&tiny(), &device);
            // The cut layer (the device's last, layer 1) by hand, unfactored, with the
            // feed-forward residual dropped.
            let mask = mask_bias(&b.seq_lens, b.seq, &device);
            let layer = &model.encoder.layer[1];
            let x = model.encoder.layer[0].forward(
                model.embeddings.forward(b.ids_tensor(&device)),
                mask.clone(),
            );
            let attended = layer.forward_attention(x, mask);
            let out = &layer.output;
            let exact = values(
                out.layer_norm
                    .forward(out.dense.forward(layer.expand(attended))),
            );
            // hidden 16, ff 32: rank 16 is full for both weights.
            let form = CutForm::Sft { rank: 16, weight };
            let (bottom, top) = split(model, 2, form, 2, &device).unwrap();
            let code = bottom.forward(&b, &device);
            assert_eq!(code.dims(), [2, 4, 16]);
            let factored = values(top.sft.as_ref().unwrap().forward(code));
            assert_eq!(exact.len(), factored.len());
            for (a, f) in exact.iter().zip(&factored) {
                assert!((a - f).abs() < 2e-3, "{weight:?}: {a} vs {f}");
            }
            // A lower rank, a narrower code.
            let model = MiniLm::new(&tiny(), &device);
            let form = CutForm::Sft { rank: 4, weight };
            let (bottom, _) = split(model, 2, form, 2, &device).unwrap();
            assert_eq!(bottom.forward(&b, &device).dims(), [2, 4, 4]);
        }
        for cut in [0, 3] {
            let model = MiniLm::new(&tiny(), &device);
            assert!(split(model, cut, CutForm::Hidden, 2, &device).is_err());
        }
    }
}
