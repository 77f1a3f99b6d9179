//! Codec flags (`topk:ratio=0.01`, `lowrank:r=4,bits=8`): [`CodecDesc`]'s `FromStr`,
//! beside its `Display`, and the `name:key=value,...` reading the split codecs share.

use super::CodecDesc;
use std::str::FromStr;
use tandem_kernels::linalg::MAX_RANK;

/// A codec flag that does not parse, and why (one line for the person who typed it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecSyntax(pub String);

/// A codec flag read as its name and `key=value` numbers.
pub struct CodecFlag<'a> {
    /// The whole flag, for messages.
    pub text: &'a str,
    /// What precedes the `:`.
    pub name: &'a str,
    params: Vec<(&'a str, f64)>,
}

impl<'a> CodecFlag<'a> {
    /// Reads `text`; each key must be one that `takes(name, key)` accepts.
    pub fn read(text: &'a str, takes: impl Fn(&str, &str) -> bool) -> Result<Self, CodecSyntax> {
        let (name, args) = text.split_once(':').unwrap_or((text, ""));
        let mut params = Vec::new();
        for pair in args.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                CodecSyntax(format!("`{pair}` in codec `{text}` is not key=value"))
            })?;
            let value: f64 = value
                .parse()
                .map_err(|_| CodecSyntax(format!("`{value}` in codec `{text}` is not a number")))?;
            if !takes(name, key) {
                return Err(CodecSyntax(format!(
                    "codec `{name}` has no parameter `{key}`"
                )));
            }
            params.push((key, value));
        }
        Ok(Self { text, name, params })
    }

    /// `key`'s value, or `default`; an error names the key when there is neither.
    pub fn get(&self, key: &str, default: Option<f64>) -> Result<f64, CodecSyntax> {
        self.params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, v)| v)
            .or(default)
            .ok_or_else(|| CodecSyntax(format!("codec `{}` needs `{key}=`", self.text)))
    }

    /// A fraction in 0..=1 as parts per million.
    pub fn ppm(&self, v: f64) -> Result<u32, CodecSyntax> {
        (0.0..=1.0)
            .contains(&v)
            .then(|| (v * 1e6).round() as u32)
            .ok_or_else(|| {
                CodecSyntax(format!(
                    "codec `{}`: fraction {v} is not in 0..=1",
                    self.text
                ))
            })
    }

    /// Bits of a quantised factor: 8, 16 or 32.
    pub fn bits(&self, v: f64) -> Result<u8, CodecSyntax> {
        match v as u8 {
            b @ (8 | 16 | 32) if v.fract() == 0.0 => Ok(b),
            _ => Err(CodecSyntax(format!(
                "codec `{}`: bits must be 8, 16 or 32",
                self.text
            ))),
        }
    }

    /// A factorisation's rank: 1..=MAX_RANK.
    pub fn rank(&self, v: f64) -> Result<u16, CodecSyntax> {
        match v as usize {
            r @ 1..=MAX_RANK if v.fract() == 0.0 => Ok(r as u16),
            _ => Err(CodecSyntax(format!(
                "codec `{}`: r must be 1..={MAX_RANK}",
                self.text
            ))),
        }
    }
}

/// The tensor codecs' flags, as [`CodecDesc`]'s `Display` writes them: `identity`,
/// `f16`, `int8`, `lowrank:r=R[,bits=B,iters=N]`, `topk:ratio=F`, `dct:keep=F`,
/// `acp:r=R[,bits=B]`.
impl FromStr for CodecDesc {
    type Err = CodecSyntax;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let flag = CodecFlag::read(text, |name, key| {
            matches!(
                (name, key),
                ("int8", "block")
                    | ("lowrank", "r" | "bits" | "iters")
                    | ("acp", "r" | "bits")
                    | ("topk", "ratio")
                    | ("dct", "keep")
            )
        })?;
        Ok(match flag.name {
            "identity" => Self::Identity,
            "f16" => Self::F16,
            "int8" => {
                // Blocks of 64 unless a flag written by `Display` says otherwise (0: one
                // block a row).
                let block = flag.get("block", Some(64.0))?;
                if !(0.0..=65_535.0).contains(&block) || block.fract() != 0.0 {
                    return Err(CodecSyntax(format!(
                        "codec `{text}`: block must be 0..=65535"
                    )));
                }
                Self::Int8 {
                    block: block as u16,
                }
            }
            "lowrank" => Self::LowRank {
                rank: flag.rank(flag.get("r", None)?)?,
                power_iters: flag.get("iters", Some(2.0))?.clamp(0.0, 16.0) as u8,
                factor_bits: flag.bits(flag.get("bits", Some(8.0))?)?,
            },
            "acp" => Self::Acp {
                rank: flag.rank(flag.get("r", None)?)?,
                factor_bits: flag.bits(flag.get("bits", Some(8.0))?)?,
            },
            "topk" => Self::TopK {
                ratio_ppm: flag.ppm(flag.get("ratio", None)?)?,
            },
            "dct" => Self::Dct {
                keep_ppm: flag.ppm(flag.get("keep", None)?)?,
            },
            other => {
                return Err(CodecSyntax(format!(
                    "unknown codec `{other}` (identity, f16, int8, lowrank, topk, dct, acp)"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_prints_as_its_flag_and_parses_back() {
        for codec in [
            CodecDesc::Identity,
            CodecDesc::F16,
            CodecDesc::Int8 { block: 64 },
            CodecDesc::Int8 { block: 4096 },
            CodecDesc::Int8 { block: 0 },
            CodecDesc::LowRank {
                rank: 4,
                power_iters: 1,
                factor_bits: 8,
            },
            CodecDesc::TopK { ratio_ppm: 30_000 },
            CodecDesc::Dct { keep_ppm: 100_000 },
            CodecDesc::Acp {
                rank: 8,
                factor_bits: 16,
            },
        ] {
            assert_eq!(codec.to_string().parse::<CodecDesc>(), Ok(codec), "{codec}");
        }
        for bad in [
            "lowrank",
            "lowrank:r=0",
            "acp:r=4,iters=2",
            "acp:r=4,bits=7",
            "topk:ratio=2",
            "int8:block=70000",
            "zip",
            "sft:r=16",
        ] {
            assert!(bad.parse::<CodecDesc>().is_err(), "{bad} accepted");
        }
    }
}
