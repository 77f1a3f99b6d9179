//! Hostile clients for simulations (`--byzantine F:MODE`): a fraction F of the clients,
//! chosen from the seed, corrupts every update it sends, to exercise the robust
//! strategies.

use std::fmt;
use std::str::FromStr;
use tandem_runtime::rng::SplitMix64;

/// How a hostile client corrupts its delta.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    /// `d -> -X d` (`sign-flip[:X]`, X = 1 by default).
    SignFlip(f32),
    /// `d -> X d` (`scale:X`).
    Scale(f32),
    /// `d -> N(0, S^2)` per coordinate (`noise[:S]`, S = 1 by default).
    Noise(f32),
}

/// A share of hostile clients and their attack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Byzantine {
    /// Share of clients, in [0, 1].
    pub fraction: f64,
    /// What they do.
    pub attack: Attack,
}

impl FromStr for Byzantine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "--byzantine {s}: expected F:sign-flip[:X], F:scale:X or F:noise[:S] with F in [0, 1]"
            )
        };
        let mut parts = s.split(':');
        let fraction: f64 = parts
            .next()
            .and_then(|f| f.parse().ok())
            .filter(|f| (0.0..=1.0).contains(f))
            .ok_or_else(bad)?;
        let mode = parts.next().ok_or_else(bad)?;
        let number = parts.next().map(str::parse::<f32>);
        if parts.next().is_some() {
            return Err(bad());
        }
        let value = |default: Option<f32>| match (number.clone(), default) {
            (Some(Ok(v)), _) if v.is_finite() => Ok(v),
            (None, Some(d)) => Ok(d),
            _ => Err(bad()),
        };
        let attack = match mode {
            "sign-flip" => Attack::SignFlip(value(Some(1.0))?),
            "scale" => Attack::Scale(value(None)?),
            "noise" => Attack::Noise(value(Some(1.0))?),
            _ => return Err(bad()),
        };
        Ok(Self { fraction, attack })
    }
}

impl fmt::Display for Byzantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attack {
            Attack::SignFlip(x) => write!(f, "{}:sign-flip:{x}", self.fraction),
            Attack::Scale(x) => write!(f, "{}:scale:{x}", self.fraction),
            Attack::Noise(s) => write!(f, "{}:noise:{s}", self.fraction),
        }
    }
}

impl Byzantine {
    /// Which of `clients` clients are hostile: `round(fraction * clients)` of them.
    pub fn choose(&self, clients: usize, seed: u64) -> Vec<bool> {
        let hostile = (self.fraction * clients as f64).round() as usize;
        let mut ids: Vec<usize> = (0..clients).collect();
        // A stream of its own: round sampling uses derive(seed, round).
        SplitMix64::derive(seed ^ 0x6279_7a61_6e74_696e, u64::MAX).shuffle(&mut ids);
        let mut out = vec![false; clients];
        for &i in &ids[..hostile.min(clients)] {
            out[i] = true;
        }
        out
    }

    /// Corrupts `delta` in place.
    pub fn corrupt(&self, delta: &mut [f32], seed: u64) {
        match self.attack {
            Attack::SignFlip(x) => delta.iter_mut().for_each(|d| *d *= -x),
            Attack::Scale(x) => delta.iter_mut().for_each(|d| *d *= x),
            Attack::Noise(s) => {
                let mut rng = SplitMix64::new(seed);
                delta.iter_mut().for_each(|d| *d = s * rng.normal() as f32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chooses_and_corrupts() {
        let b: Byzantine = "0.2:sign-flip:10".parse().unwrap();
        assert_eq!(b.attack, Attack::SignFlip(10.0));
        assert_eq!(b.to_string().parse::<Byzantine>().unwrap(), b);
        let chosen = b.choose(100, 3);
        assert_eq!(chosen.iter().filter(|&&h| h).count(), 20);
        assert_eq!(chosen, b.choose(100, 3));
        let mut d = [1.0, -2.0];
        b.corrupt(&mut d, 0);
        assert_eq!(d, [-10.0, 20.0]);
        assert_eq!(
            "0.1:noise".parse::<Byzantine>().unwrap().attack,
            Attack::Noise(1.0)
        );
        for bad in [
            "",
            "0.2",
            "1.5:scale:2",
            "0.2:scale",
            "0.2:flip",
            "0.2:scale:x",
            "0.2:noise:1:2",
        ] {
            assert!(bad.parse::<Byzantine>().is_err(), "{bad}");
        }
    }
}
