//! Hostile clients, to exercise a cloud's defences (robust strategies, the median caps):
//! in a simulation a fraction F of the clients, chosen from the seed, corrupts every
//! update it sends (`simulate --byzantine F:ATTACK`); over the network one device does
//! (`tandem fl --byzantine ATTACK`, a test mode: point it only at a cloud you run).

use crate::rng::SplitMix64;
use std::fmt;
use std::str::FromStr;

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

/// `F:ATTACK`, or an attack alone.
const SYNTAX: &str = "expected F:sign-flip[:X], F:scale:X or F:noise[:S] with F in [0, 1]";

impl FromStr for Attack {
    type Err = String;

    /// `sign-flip[:X]`, `scale:X` or `noise[:S]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("attack {s}: expected sign-flip[:X], scale:X or noise[:S]");
        let (mode, number) = match s.split_once(':') {
            Some((mode, number)) => (mode, Some(number)),
            None => (s, None),
        };
        let value = |default: Option<f32>| match (number.map(str::parse::<f32>), default) {
            (Some(Ok(v)), _) if v.is_finite() => Ok(v),
            (None, Some(d)) => Ok(d),
            _ => Err(bad()),
        };
        Ok(match mode {
            "sign-flip" => Self::SignFlip(value(Some(1.0))?),
            "scale" => Self::Scale(value(None)?),
            "noise" => Self::Noise(value(Some(1.0))?),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SignFlip(x) => write!(f, "sign-flip:{x}"),
            Self::Scale(x) => write!(f, "scale:{x}"),
            Self::Noise(s) => write!(f, "noise:{s}"),
        }
    }
}

impl FromStr for Byzantine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--byzantine {s}: {SYNTAX}");
        let (fraction, attack) = s.split_once(':').ok_or_else(bad)?;
        let fraction: f64 = fraction
            .parse()
            .ok()
            .filter(|f| (0.0..=1.0).contains(f))
            .ok_or_else(bad)?;
        let attack = attack.parse().map_err(|_| bad())?;
        Ok(Self { fraction, attack })
    }
}

impl fmt::Display for Byzantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.fraction, self.attack)
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
        self.attack.corrupt(delta, seed);
    }
}

impl Attack {
    /// Corrupts `delta` in place (`seed` draws the noise).
    pub fn corrupt(&self, delta: &mut [f32], seed: u64) {
        match *self {
            Self::SignFlip(x) => delta.iter_mut().for_each(|d| *d *= -x),
            Self::Scale(x) => delta.iter_mut().for_each(|d| *d *= x),
            Self::Noise(s) => {
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
        // A device's attack alone, as `tandem fl --byzantine` takes it.
        assert_eq!("scale:3".parse::<Attack>(), Ok(Attack::Scale(3.0)));
        assert_eq!(Attack::SignFlip(10.0).to_string(), "sign-flip:10");
        assert!("0.2:scale:2".parse::<Attack>().is_err());
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
