//! Nothing is aggregated before it passes here: the update's bytes decode to exactly the
//! model's layout under the round's codec, every value is finite, the example count is
//! plausible, and the L2 norm is within the bound (clipped down to it, or refused).
//! A refusal carries its reason, for the log and the round's metrics.

use super::strategy::ClientUpdate;
use std::fmt;
use std::str::FromStr;
use tandem_runtime::fl::Layout;
use tandem_runtime::fl::acp::SharedFactors;
use tandem_runtime::fl::update::{self, UpdateError};
use tandem_runtime::wire::CodecDesc;

/// The most examples an update may claim: a weight beyond this is a lie, not a board.
pub const MAX_EXAMPLES: u64 = 1 << 24;

/// What to do with an update whose norm is over the bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormBound {
    /// Scale it down to the bound (as DP-FedAvg clips).
    Clip(f32),
    /// Refuse it.
    Refuse(f32),
}

impl NormBound {
    fn bound(self) -> f32 {
        match self {
            Self::Clip(b) | Self::Refuse(b) => b,
        }
    }
}

impl FromStr for NormBound {
    type Err = String;

    /// `NORM` (clip) or `NORM:refuse`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (norm, mode) = s.split_once(':').unwrap_or((s, "clip"));
        let bound: f32 = norm
            .parse()
            .ok()
            .filter(|b: &f32| b.is_finite() && *b > 0.0)
            .ok_or_else(|| format!("--clip {s}: expected a positive norm, e.g. 10 or 10:refuse"))?;
        match mode {
            "clip" => Ok(Self::Clip(bound)),
            "refuse" => Ok(Self::Refuse(bound)),
            _ => Err(format!("--clip {s}: the mode is clip or refuse")),
        }
    }
}

impl fmt::Display for NormBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Clip(b) => write!(f, "{b}:clip"),
            Self::Refuse(b) => write!(f, "{b}:refuse"),
        }
    }
}

/// Why an update was not aggregated.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Refusal {
    /// The bytes are not an update of this model under this codec.
    #[error("undecodable update: {0}")]
    Decode(#[from] UpdateError),
    /// No examples, or implausibly many.
    #[error("{0} examples claimed (expected 1..={MAX_EXAMPLES})")]
    Examples(u64),
    /// Over the norm bound in refuse mode.
    #[error("update norm {norm:.3} over the bound {bound}")]
    NormExceeded {
        /// Its L2 norm.
        norm: f32,
        /// The bound.
        bound: f32,
    },
}

/// A validated update and whether it was clipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// The update, ready to aggregate.
    pub update: ClientUpdate,
    /// Its L2 norm before any clipping.
    pub norm: f32,
    /// Whether it was scaled down to the bound.
    pub clipped: bool,
}

/// Decodes `bytes` (an update of `layout` under `desc`, against the round's `shared`
/// factors if ACP) and checks it.
pub fn validate(
    desc: CodecDesc,
    shared: Option<&SharedFactors>,
    layout: &Layout,
    bytes: &[u8],
    examples: u64,
    bound: Option<NormBound>,
) -> Result<Validated, Refusal> {
    if !(1..=MAX_EXAMPLES).contains(&examples) {
        return Err(Refusal::Examples(examples));
    }
    let mut delta = update::decode_shared(desc, layout, bytes, shared)?;
    let exact = exact_norm(&delta);
    let norm = exact as f32;
    let mut clipped = false;
    if let Some(limit) = bound
        && exact > f64::from(limit.bound())
    {
        match limit {
            NormBound::Refuse(bound) => return Err(Refusal::NormExceeded { norm, bound }),
            NormBound::Clip(bound) => {
                clip_to(&mut delta, exact, f64::from(bound));
                clipped = true;
            }
        }
    }
    Ok(Validated {
        update: ClientUpdate { delta, examples },
        norm,
        clipped,
    })
}

/// The L2 norm summed in f64: the bound is the DP mechanism's sensitivity, so it is
/// checked exactly enough (an f32 sum of 10^5 squares can come out 1e-4 low).
pub fn exact_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Scales `delta` (of norm `norm`) to at most `bound`: each value's rounding back to f32
/// may add 2^-24 of it, so the scale is that much short of `bound / norm`.
pub fn clip_to(delta: &mut [f32], norm: f64, bound: f64) {
    let scale = bound / norm * (1.0 - f64::from(f32::EPSILON));
    delta
        .iter_mut()
        .for_each(|d| *d = (f64::from(*d) * scale) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_runtime::fl::update::UpdateEncoder;

    fn layout() -> Layout {
        Layout::from_shapes(&[("w", &[2, 2]), ("b", &[2])])
    }

    fn bytes(values: &[f32]) -> Vec<u8> {
        UpdateEncoder::new(layout(), CodecDesc::Identity)
            .unwrap()
            .encode(values)
            .unwrap()
    }

    #[test]
    fn a_good_update_passes_and_an_oversized_one_is_clipped_or_refused() {
        let good = bytes(&[3.0, 0.0, 0.0, 4.0, 0.0, 0.0]);
        let v = validate(CodecDesc::Identity, None, &layout(), &good, 10, None).unwrap();
        assert_eq!((v.norm, v.clipped), (5.0, false));
        let clip = Some("2.5".parse().unwrap());
        let v = validate(CodecDesc::Identity, None, &layout(), &good, 10, clip).unwrap();
        assert!(v.clipped);
        let want = [1.5, 0.0, 0.0, 2.0, 0.0, 0.0];
        for (got, want) in v.update.delta.iter().zip(want) {
            assert!(
                (got - want).abs() <= 4e-7 && got.abs() <= want,
                "{got} for {want}"
            );
        }
        let refuse = Some("2.5:refuse".parse().unwrap());
        assert_eq!(
            validate(CodecDesc::Identity, None, &layout(), &good, 10, refuse),
            Err(Refusal::NormExceeded {
                norm: 5.0,
                bound: 2.5
            })
        );
    }

    /// A clipped update's norm, summed exactly (f64), is within the bound: DP's
    /// sensitivity is the bound. An f32 sum of 200,000 squares of 0.37 (or 0.123) comes
    /// out about 1e-4 low, so clipping by it left the update that much over.
    #[test]
    fn a_clipped_update_is_within_the_bound_in_exact_arithmetic() {
        let n = 200_000;
        let layout = Layout::from_shapes(&[("w", &[n])]);
        for value in [0.37f32, 0.123, 0.1, 0.9] {
            let raw = UpdateEncoder::new(layout.clone(), CodecDesc::Identity)
                .unwrap()
                .encode(&vec![value; n])
                .unwrap();
            let bound = 10.0;
            let v = validate(
                CodecDesc::Identity,
                None,
                &layout,
                &raw,
                1,
                Some(NormBound::Clip(bound)),
            )
            .unwrap();
            assert!(v.clipped);
            let exact = v
                .update
                .delta
                .iter()
                .map(|&d| f64::from(d) * f64::from(d))
                .sum::<f64>()
                .sqrt();
            assert!(
                exact <= f64::from(bound),
                "{value}: clipped to {exact}, over the bound {bound}"
            );
            let true_norm = f64::from(value) * (n as f64).sqrt();
            assert!(
                ((f64::from(v.norm) / true_norm) - 1.0).abs() < 1e-6,
                "{}",
                v.norm
            );
        }
    }

    #[test]
    fn wrong_shapes_non_finite_values_and_lying_counts_are_refused() {
        let good = bytes(&[1.0; 6]);
        let layout = layout();
        for examples in [0, MAX_EXAMPLES + 1] {
            assert_eq!(
                validate(CodecDesc::Identity, None, &layout, &good, examples, None),
                Err(Refusal::Examples(examples))
            );
        }
        // Another model's update: one value short in the last tensor.
        let short = &good[..good.len() - 4];
        assert!(matches!(
            validate(CodecDesc::Identity, None, &layout, short, 1, None),
            Err(Refusal::Decode(_))
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(validate(CodecDesc::Identity, None, &layout, &long, 1, None).is_err());
        // A NaN smuggled into the raw bytes of the first tensor.
        let mut nan = good.clone();
        nan[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(validate(CodecDesc::Identity, None, &layout, &nan, 1, None).is_err());
        // A large tensor's identity bytes decoded under the round's f16 codec.
        let big = Layout::from_shapes(&[("big", &[32, 32])]);
        let raw = UpdateEncoder::new(big.clone(), CodecDesc::Identity)
            .unwrap()
            .encode(&[0.5; 1024])
            .unwrap();
        assert!(validate(CodecDesc::F16, None, &big, &raw, 1, None).is_err());
        for bad in ["0", "-1", "x", "inf", "3:maybe"] {
            assert!(bad.parse::<NormBound>().is_err(), "{bad}");
        }
    }
}
