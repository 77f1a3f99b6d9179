//! Federated learning on the device and the shared pieces both sides use.
//!
//! - [`Layout`]: the names and shapes of a model's parameters in one flat vector.
//! - [`update`]: a flat vector on the wire, each tensor through the round's codec, with
//!   per-tensor codec state (error feedback, warm-started PowerSGD) kept across rounds.
//! - [`task`]: what a federated task provides (a model, local training, evaluation), and
//!   `fmnist` (feature `model`), LeNet-5 on Fashion-MNIST.
//! - [`downlink`]: the global model to a device, whole or as a delta from the model it
//!   holds, both sides tracking what the device decoded.
//! - [`client`]: a device's side of a round, from the task and model to the update.

pub mod client;
pub mod downlink;
mod layout;
pub mod task;
pub mod update;

#[cfg(feature = "model")]
pub mod fmnist;

pub use layout::{Layout, TensorSpec};

/// The update codec named by `text` (`identity`, `f16`, `int8`, `topk:ratio=F`,
/// `lowrank:r=R[,bits=B,iters=N]`, `dct:keep=F`); the split-only `sft` is refused.
#[cfg(feature = "model")]
pub fn update_codec(text: &str) -> Result<crate::wire::CodecDesc, String> {
    use crate::model::split::{CutForm, LinkCodec};
    let codec = LinkCodec::parse(text)?;
    if codec.form != CutForm::Hidden {
        return Err(format!(
            "codec `{text}` is for split fine-tuning, not for model updates"
        ));
    }
    Ok(codec.tensor)
}
