//! The two halves of MiniLM at a cut: the device's [`Bottom`] (embeddings and layers
//! `0..cut`) and the cloud's [`Top`] (layers `cut..6`, mean pooling, a classifier).

use super::spec::CutForm;
use crate::model::minilm::{Batch, Embeddings, Layer, MiniLm, mask_bias, mean_pool};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use tandem_kernels::linalg::truncated_svd;

/// Power iterations of the cut weight's truncated SVD: the leading singular values of
/// a 1536 x 384 weight are well separated, and 8 iterations match them to ~1e-4.
const SVD_POWER_ITERS: usize = 8;
/// The SVD's random start is fixed so device and cloud factor the weight identically.
const SVD_SEED: u64 = 0x5f7;

/// Device half.
#[derive(Module, Debug)]
pub struct Bottom {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// SFT: the down factor `D` (`ff -> rank`) replacing the last layer's output
    /// projection.
    sft_down: Option<Linear>,
}

impl Bottom {
    /// What crosses the cut: `[batch, seq, width]`.
    pub fn forward(&self, batch: &Batch, device: &Device) -> Tensor<3> {
        let mask = mask_bias(&batch.seq_lens, batch.seq, device);
        let mut x = self.embeddings.forward(batch.ids_tensor(device));
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            if i == last
                && let Some(down) = &self.sft_down
            {
                let (_residual, expanded) = layer.forward_to_intermediate(x, mask);
                return down.forward(expanded);
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

/// The cloud's start of an SFT cut: the up factor `U` (`rank -> d`, with the original
/// bias) and the cut layer's output layer norm.
#[derive(Module, Debug)]
struct SftUp {
    up: Linear,
    norm: LayerNorm,
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
            Some(sft) => sft.norm.forward(sft.up.forward(cut)),
            None => cut,
        };
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        self.head.forward(mean_pool(x, seq_lens))
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
    let (sft_down, sft) = match form {
        CutForm::Hidden => (None, None),
        CutForm::Sft { rank } => {
            let output = &layers[cut - 1].output;
            let (down, up) = factorize(&output.dense, rank, device)?;
            let norm = output.layer_norm.clone();
            (Some(down), Some(SftUp { up, norm }))
        }
    };
    let bottom = Bottom {
        embeddings,
        layers,
        sft_down,
    };
    let top = Top {
        sft,
        layers: top_layers,
        head: LinearConfig::new(hidden, classes).init(device),
    };
    Ok((bottom, top))
}

/// `W` (`in x out`, burn's layout) ~ `D U` with `D = U_r sqrt(S)` (`in x rank`, no
/// bias) and `U = sqrt(S) V_r^T` (`rank x out`, `W`'s bias), from a truncated SVD on
/// tandem's kernels.
fn factorize(linear: &Linear, rank: usize, device: &Device) -> Result<(Linear, Linear), String> {
    let [inputs, outputs] = linear.weight.dims();
    let w: Vec<f32> = linear
        .weight
        .val()
        .into_data()
        .try_to_vec()
        .map_err(|e| format!("cut weight: {e:?}"))?;
    let svd = truncated_svd(&w, inputs, outputs, rank, SVD_POWER_ITERS, SVD_SEED)
        .map_err(|e| format!("SVD of the cut weight: {e}"))?;
    let root: Vec<f32> = svd.s.iter().map(|s| s.sqrt()).collect();
    let down: Vec<f32> = (0..inputs * rank)
        .map(|i| svd.u[i] * root[i % rank])
        .collect();
    let up: Vec<f32> = (0..rank * outputs)
        .map(|i| root[i / outputs] * svd.v[(i % outputs) * rank + i / outputs])
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

    #[test]
    fn sft_at_full_rank_reproduces_the_projection_and_refuses_bad_cuts() {
        let device = ComputeBackend::Flex.device();
        let model = MiniLm::new(&tiny(), &device);
        let w = &model.encoder.layer[0].output.dense;
        let x = Tensor::<2>::from_data(
            TensorData::new((0..64).map(|v| (v as f32 * 0.37).sin()).collect(), [2, 32]),
            &device,
        );
        let exact: Vec<f32> = w.forward(x.clone()).into_data().try_to_vec().unwrap();
        let (down, up) = factorize(w, 16, &device).unwrap();
        let approx: Vec<f32> = up
            .forward(down.forward(x))
            .into_data()
            .try_to_vec()
            .unwrap();
        for (a, b) in exact.iter().zip(&approx) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        let (bottom, _) = split(model, 1, CutForm::Sft { rank: 4 }, 2, &device).unwrap();
        assert_eq!(bottom.forward(&batch(), &device).dims(), [2, 4, 4]);
        for cut in [0, 3] {
            let model = MiniLm::new(&tiny(), &device);
            assert!(split(model, cut, CutForm::Hidden, 2, &device).is_err());
        }
    }
}
