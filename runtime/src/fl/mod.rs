//! Federated learning on the device and the shared pieces both sides use.
//!
//! - [`Layout`]: the names and shapes of a model's parameters in one flat vector.
//! - [`update`]: a flat vector on the wire, each tensor through the round's codec, with
//!   per-tensor codec state (error feedback, warm-started PowerSGD) kept across rounds.
//! - [`task`]: what a federated task provides (a model, local training, evaluation), and
//!   `fmnist` (feature `model`), LeNet-5 on Fashion-MNIST, and `sentiment`, MiniLM's LoRA
//!   adapters on Rotten Tomatoes reviews partitioned by movie.
//! - [`downlink`]: the global model to a device, whole or as a delta from the model it
//!   holds, both sides tracking what the device decoded.
//! - [`acp`]: the factors ACP rounds share (`acp:r=R`: one low-rank factor up per tensor).
//! - [`client`]: a device's side of a round, from the task and model to the update.
//! - [`secagg`]: secure aggregation (pairwise masks, secret-shared seeds, drop-outs).
//! - [`byzantine`]: hostile clients, to exercise a cloud's defences.

pub mod acp;
pub mod byzantine;
pub mod client;
pub mod downlink;
mod layout;
pub mod secagg;
pub mod task;
pub mod update;

#[cfg(feature = "model")]
pub mod fmnist;
#[cfg(feature = "model")]
mod local_sgd;
#[cfg(feature = "model")]
pub mod sentiment;

pub use layout::{Layout, TensorSpec};

#[cfg(feature = "model")]
use crate::wire::CodecDesc;

/// The update codec named by `text` (`identity`, `f16`, `int8`, `topk:ratio=F`,
/// `lowrank:r=R[,bits=B,iters=N]`, `dct:keep=F`, `acp:r=R[,bits=B]`); the split-only
/// `sft` is refused.
#[cfg(feature = "model")]
pub fn update_codec(text: &str) -> Result<CodecDesc, String> {
    if text.starts_with("sft") {
        return Err(format!(
            "codec `{text}` is for split fine-tuning, not for model updates"
        ));
    }
    text.parse()
        .map_err(|e: crate::wire::CodecSyntax| e.to_string())
}

#[cfg(all(test, feature = "model"))]
mod tests {
    use super::update_codec;
    use crate::wire::CodecDesc;

    /// Every tensor codec's flag parses back (`wire::codec_flag`); an update takes
    /// them all, acp included, and refuses the split-only forms.
    #[test]
    fn an_update_takes_the_tensor_codecs_and_not_the_split_forms() {
        assert_eq!(
            update_codec("acp:r=2"),
            Ok(CodecDesc::Acp {
                rank: 2,
                factor_bits: 8
            })
        );
        assert_eq!(
            CodecDesc::TopK { ratio_ppm: 30_000 }.to_string(),
            "topk:ratio=0.03"
        );
        let sft = update_codec("sft:r=16").unwrap_err();
        assert!(sft.contains("split fine-tuning"), "{sft}");
    }
}
