//! What a split run is: where the model is cut, what crosses the cut, how it is
//! encoded, and which device layers train. Parsed from the command line.

use crate::wire::{CodecDesc, CodecFlag, CodecSyntax};
use std::fmt;

/// How the device's layers take part in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Device layers frozen: activations go up, no gradient comes back.
    FrozenBottom,
    /// Device layers trained with the returned cut gradient (the default: the split
    /// fine-tuning that learns; see README "Split fine-tuning").
    #[default]
    TrainBottom,
    /// LoRA adapters (rank <= 16) on the device's query and value projections are
    /// trained; the pretrained weights stay frozen.
    LoraBottom,
}

impl Mode {
    /// Whether the device needs the cut gradient.
    pub fn wants_gradient(self) -> bool {
        self != Self::FrozenBottom
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FrozenBottom => "frozen-bottom",
            Self::TrainBottom => "train-bottom",
            Self::LoraBottom => "lora-bottom",
        })
    }
}

/// How the cloud trains each device's top half.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TopTraining {
    /// Every top layer and the head train: a whole top per device (about 85 MB at cut
    /// 2 with AdamW's two moments).
    #[default]
    PerDevice,
    /// The upper layers stay the pretrained ones, one copy shared by every device (burn
    /// tensors are reference-counted); each device trains LoRA adapters of this rank
    /// (1..=16) on their query and value projections, and its own head: about a
    /// megabyte per device.
    Lora {
        /// The adapters' rank.
        rank: usize,
    },
    /// One top, trained whole by every device (SplitFed): one copy in memory whatever
    /// the number of devices, and steps of devices that arrive together train it as one
    /// batch. Every device must ask for the same cut and form.
    Shared,
}

impl std::str::FromStr for TopTraining {
    type Err = String;

    /// `per-device`, `lora:R` (R in 1..=16) or `shared`.
    fn from_str(s: &str) -> Result<Self, String> {
        let max = crate::model::minilm::lora::MAX_LORA_RANK;
        match s {
            "per-device" => return Ok(Self::PerDevice),
            "shared" => return Ok(Self::Shared),
            _ => {}
        }
        match s.strip_prefix("lora:").map(str::parse::<usize>) {
            Some(Ok(rank)) if (1..=max).contains(&rank) => Ok(Self::Lora { rank }),
            _ => Err(format!(
                "`{s}`: expected per-device, shared, or lora:R with R in 1..={max}"
            )),
        }
    }
}

impl fmt::Display for TopTraining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PerDevice => f.write_str("per-device"),
            Self::Lora { rank } => write!(f, "lora:{rank}"),
            Self::Shared => f.write_str("shared"),
        }
    }
}

/// Which feed-forward weight of the cut layer the SFT code factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SftWeight {
    /// The expansion `W1` (`d -> ff`), as the SFT authors' code does: the device runs
    /// the cut layer's attention block and sends `a V_r S_r` (its truncated SVD's right
    /// factor and singular values); the cloud applies `U_r^T` and `W1`'s bias, GELU, the
    /// contraction `W2` and the layer norm, without the residual around the
    /// feed-forward block (the eliminated link).
    W1,
    /// The contraction `W2` (`ff -> d`): the device also runs `W1` and GELU and sends
    /// `g U_r sqrt(S_r)`; the cloud applies `sqrt(S_r) V_r^T`, `W2`'s bias and the layer
    /// norm, again without the residual (tandem's first form, kept for comparison).
    W2,
}

/// What crosses the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutForm {
    /// The cut layer's hidden states (`d` = 384 per token).
    Hidden,
    /// The SFT code: one feed-forward weight of the cut layer (the device's last) is
    /// replaced by its rank-`rank` truncated SVD, and only the `rank` values per token
    /// between the two factors cross the cut. Both factors train (the device's with
    /// the returned gradient).
    Sft {
        /// Width of the code.
        rank: usize,
        /// The weight factored.
        weight: SftWeight,
    },
}

impl CutForm {
    /// Values per token that cross the cut for a model of width `hidden`.
    pub fn width(self, hidden: usize) -> usize {
        match self {
            CutForm::Hidden => hidden,
            CutForm::Sft { rank, .. } => rank,
        }
    }
}

/// A link codec: the cut form and the tensor encoding, both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkCodec {
    /// What crosses the cut.
    pub form: CutForm,
    /// How the activations (and the gradient coming back) are encoded.
    pub tensor: CodecDesc,
}

/// Int8 scale block for SFT codes: 256 tokens of a rank-16 code per f32 scale.
const SFT_INT8_BLOCK: u16 = 4096;

impl LinkCodec {
    /// Parses `identity`, `f16`, `int8`, `lowrank:r=8,bits=8[,iters=2]`,
    /// `topk:ratio=0.01`, `dct:keep=0.1`, `sft:r=16,bits=8` (W1 factored) or
    /// `sft-w2:r=16,bits=8`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::read(text).map_err(|e| e.to_string())
    }

    fn read(text: &str) -> Result<Self, CodecSyntax> {
        let name = text.split_once(':').map_or(text, |(name, _)| name);
        let weight = match name {
            "sft" => SftWeight::W1,
            "sft-w2" => SftWeight::W2,
            "acp" => {
                return Err(CodecSyntax(format!(
                    "codec `{text}` is for federated updates, not for split fine-tuning"
                )));
            }
            "identity" | "f16" | "int8" | "lowrank" | "topk" | "dct" => {
                return Ok(Self {
                    form: CutForm::Hidden,
                    tensor: text.parse()?,
                });
            }
            other => {
                return Err(CodecSyntax(format!(
                    "unknown codec `{other}` (identity, f16, int8, lowrank, topk, dct, sft, sft-w2)"
                )));
            }
        };
        let flag = CodecFlag::read(text, |_, key| matches!(key, "r" | "bits"))?;
        Ok(Self {
            form: CutForm::Sft {
                rank: usize::from(flag.rank(flag.get("r", Some(16.0))?)?),
                weight,
            },
            tensor: match flag.bits(flag.get("bits", Some(8.0))?)? {
                8 => CodecDesc::Int8 {
                    block: SFT_INT8_BLOCK,
                },
                16 => CodecDesc::F16,
                _ => CodecDesc::Identity,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_codec_and_refuses_bad_ones() {
        let lowrank = LinkCodec::parse("lowrank:r=8,bits=8").unwrap();
        assert_eq!(
            lowrank.tensor,
            CodecDesc::LowRank {
                rank: 8,
                power_iters: 2,
                factor_bits: 8
            }
        );
        let sft = LinkCodec::parse("sft:r=16,bits=8").unwrap();
        assert_eq!(
            sft.form,
            CutForm::Sft {
                rank: 16,
                weight: SftWeight::W1
            }
        );
        assert_eq!(
            LinkCodec::parse("sft-w2:r=8").unwrap().form,
            CutForm::Sft {
                rank: 8,
                weight: SftWeight::W2
            }
        );
        assert_eq!(sft.form.width(384), 16);
        assert_eq!(LinkCodec::parse("identity").unwrap().form.width(384), 384);
        assert_eq!(
            LinkCodec::parse("topk:ratio=0.01").unwrap().tensor,
            CodecDesc::TopK { ratio_ppm: 10_000 }
        );
        for bad in [
            "lowrank",
            "lowrank:r=0",
            "lowrank:r=8,bits=7",
            "lowrank:rank=8",
            "topk:ratio=2",
            "sft:r=x",
            "sft-w2:ratio=0.1",
            "zip",
            "lowrank:r",
        ] {
            assert!(LinkCodec::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
