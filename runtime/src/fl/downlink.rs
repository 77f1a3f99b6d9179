//! The global model on its way down: the whole model, or its delta from the model the
//! device already holds, through a stateless codec (identity, f16, int8).
//!
//! Each side keeps the device's **view**: the model as the device decoded it, which a
//! lossy codec makes differ from the cloud's global. The cloud encodes
//! `global - view` and decodes its own bytes with [`receive`], exactly as the device
//! does, so both compute the same new view, bit for bit (the same f32 operations in the
//! same order, no fused multiply-add). Quantisation error therefore never accumulates:
//! the next delta carries what the last one lost. A delta names its base by round and
//! FNV-1a 64 hash, and a device that does not hold that base refuses it
//! ([`DownlinkError::MissingBase`]) rather than train on a wrong model.

use super::Layout;
use super::update::{self, UpdateEncoder, UpdateError};
use crate::fnv;
use crate::wire::{CodecDesc, ModelPayload};

/// A model as one device holds it: what it trains from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelView {
    /// The round whose task delivered it.
    pub round: u64,
    /// Its parameters, flat in the task's [`Layout`] order.
    pub weights: Vec<f32>,
}

impl ModelView {
    /// FNV-1a 64 of the weights' little-endian bytes: what a delta names as its base.
    pub fn fnv(&self) -> u64 {
        self.weights
            .iter()
            .fold(fnv::fnv1a64(&[]), |h, w| fnv::extend(h, &w.to_le_bytes()))
    }
}

/// Why a model payload could not be made or used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DownlinkError {
    /// Codecs with state across rounds (top-k, low rank) cannot carry a model.
    #[error("codec {0:?} keeps state across rounds; models travel as identity, f16 or int8")]
    StatefulCodec(CodecDesc),
    /// The payload's bytes do not decode for this model.
    #[error(transparent)]
    Payload(#[from] UpdateError),
    /// A delta against a model this device does not hold.
    #[error(
        "the round's model is a delta against round {base_round}'s, which this device does not hold{}",
        match held { Some(r) => format!(" (it holds round {r}'s)"), None => " (it holds none: restarted without its checkpoint?)".into() }
    )]
    MissingBase {
        /// The base the delta names.
        base_round: u64,
        /// The round of the view held, if any.
        held: Option<u64>,
    },
}

/// `codec` if it can carry a model (identity, f16, int8).
pub fn model_codec(codec: CodecDesc) -> Result<CodecDesc, DownlinkError> {
    match codec {
        CodecDesc::Identity | CodecDesc::F16 | CodecDesc::Int8 { .. } => Ok(codec),
        other => Err(DownlinkError::StatefulCodec(other)),
    }
}

/// A model on its way to one device.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// Full or delta, and against what.
    pub payload: ModelPayload,
    /// The encoded model or delta.
    pub bytes: Vec<u8>,
    /// The device's view once it has decoded `bytes`.
    pub view: ModelView,
}

/// Encodes `global` for round `round` to a device holding `base` (`None`: the full
/// model). Identity always sends the full model: its delta is no smaller and would only
/// add rounding.
pub fn send(
    layout: &Layout,
    codec: CodecDesc,
    global: &[f32],
    base: Option<&ModelView>,
    round: u64,
) -> Result<Sent, DownlinkError> {
    let codec = model_codec(codec)?;
    let base = base.filter(|_| codec != CodecDesc::Identity);
    let (payload, values) = match base {
        Some(base) => {
            let delta: Vec<f32> = global
                .iter()
                .zip(&base.weights)
                .map(|(g, b)| g - b)
                .collect();
            let payload = ModelPayload::Delta {
                base_round: base.round,
                base_fnv: base.fnv(),
            };
            (payload, delta)
        }
        None => (ModelPayload::Full, global.to_vec()),
    };
    let bytes = UpdateEncoder::new(layout.clone(), codec)?.encode(&values)?;
    let view = receive(layout, codec, payload, &bytes, base, round)?;
    Ok(Sent {
        payload,
        bytes,
        view,
    })
}

/// The view a device holding `held` has after round `round`'s model payload.
pub fn receive(
    layout: &Layout,
    codec: CodecDesc,
    payload: ModelPayload,
    bytes: &[u8],
    held: Option<&ModelView>,
    round: u64,
) -> Result<ModelView, DownlinkError> {
    let codec = model_codec(codec)?;
    let values = update::decode(codec, layout, bytes)?;
    let weights = match payload {
        ModelPayload::Full => values,
        ModelPayload::Delta {
            base_round,
            base_fnv,
        } => {
            let base = held
                .filter(|v| v.round == base_round && v.fnv() == base_fnv)
                .ok_or(DownlinkError::MissingBase {
                    base_round,
                    held: held.map(|v| v.round),
                })?;
            base.weights
                .iter()
                .zip(&values)
                .map(|(b, d)| b + d)
                .collect()
        }
    };
    if let Some(at) = weights.iter().position(|w| !w.is_finite()) {
        return Err(UpdateError::NonFinite { at }.into());
    }
    Ok(ModelView { round, weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::from_shapes(&[("w", &[40, 50]), ("b", &[40])])
    }

    fn model(seed: u32, scale: f32) -> Vec<f32> {
        (0..2040u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .map(|v| v * scale)
            .collect()
    }

    fn max_error(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn the_device_decodes_the_view_the_cloud_predicted() {
        let layout = layout();
        let codec = CodecDesc::Int8 { block: 0 };
        let g1 = model(1, 1.0);
        let first = send(&layout, codec, &g1, None, 1).unwrap();
        assert_eq!(first.payload, ModelPayload::Full);
        let device = receive(&layout, codec, first.payload, &first.bytes, None, 1).unwrap();
        assert_eq!(device, first.view);

        // The next global moved a little: the delta is against the device's view.
        let g2: Vec<f32> = g1.iter().zip(model(2, 0.01)).map(|(g, d)| g + d).collect();
        let second = send(&layout, codec, &g2, Some(&first.view), 2).unwrap();
        assert!(matches!(
            second.payload,
            ModelPayload::Delta { base_round: 1, .. }
        ));
        let device = receive(
            &layout,
            codec,
            second.payload,
            &second.bytes,
            Some(&device),
            2,
        )
        .unwrap();
        assert_eq!(device, second.view);
        // int8 of a full model errs by up to max/254 per block; int8 of a small delta
        // errs by that of the delta: the view tracks the global ~100x closer.
        let full_error = max_error(&first.view.weights, &g1);
        let delta_error = max_error(&second.view.weights, &g2);
        assert!(full_error > 1e-3, "{full_error}");
        assert!(
            delta_error < full_error / 20.0,
            "{delta_error} vs {full_error}"
        );
    }

    #[test]
    fn identity_always_sends_the_exact_full_model() {
        let layout = layout();
        let g = model(3, 1.0);
        let base = ModelView {
            round: 1,
            weights: model(4, 1.0),
        };
        let sent = send(&layout, CodecDesc::Identity, &g, Some(&base), 2).unwrap();
        assert_eq!(sent.payload, ModelPayload::Full);
        assert_eq!(sent.view.weights, g);
        assert_eq!(sent.bytes.len(), update::identity_len(&layout));
    }

    #[test]
    fn a_delta_against_another_base_is_refused() {
        let layout = layout();
        let codec = CodecDesc::F16;
        let base = ModelView {
            round: 4,
            weights: model(5, 1.0),
        };
        let sent = send(&layout, codec, &model(6, 1.0), Some(&base), 5).unwrap();
        let missing = |held: Option<u64>| DownlinkError::MissingBase {
            base_round: 4,
            held,
        };
        assert_eq!(
            receive(&layout, codec, sent.payload, &sent.bytes, None, 5),
            Err(missing(None))
        );
        // Same round, other weights (a cloud restarted on a fresh run): refused too.
        let other = ModelView {
            round: 4,
            weights: model(7, 1.0),
        };
        assert_eq!(
            receive(&layout, codec, sent.payload, &sent.bytes, Some(&other), 5),
            Err(missing(Some(4)))
        );
    }

    #[test]
    fn stateful_codecs_cannot_carry_a_model() {
        let topk = CodecDesc::TopK { ratio_ppm: 10_000 };
        assert_eq!(
            send(&layout(), topk, &model(1, 1.0), None, 1),
            Err(DownlinkError::StatefulCodec(topk))
        );
    }
}
