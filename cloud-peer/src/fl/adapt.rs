//! Heterogeneous devices in the simulation, and devices that adapt to them (after HCEF:
//! each device picks its local work and its compression each round from what it measured).
//!
//! A profile file names device classes, each with its share of the population, its time
//! per local step and its uplink throughput; every simulated client belongs to one class
//! (a seeded draw by share). A round has a deadline. A device's round time is its steps
//! times its step time plus its update's bytes over its uplink (the model's download and
//! the cloud's own time are left out).
//! - Without adaptation a device does the round's full local work with the round's codec;
//!   one that cannot finish by the deadline is a straggler, dropped at the deadline.
//! - With `--adapt` it plans within 90% of the deadline, along a ladder of smaller and
//!   smaller updates (the round codec, then f16 and int8, which keep every value, then
//!   top-k at 10%, 3% and 1%): the first level at which the full local work fits; if none
//!   does, the dense level (not top-k) that leaves the most steps, if that is at least
//!   half the work, its steps cut to fit; else whichever level leaves the most; if not
//!   even one step fits, it sits the round out. Dense levels are preferred because a
//!   sparse update from a device seldom sampled loses most of its work (its
//!   error-feedback residual waits for its next round).
//!
//! Every plan says what was chosen and why, and goes into the round's metrics.

use serde::{Deserialize, Serialize};
use std::path::Path;
use tandem_runtime::codec::max_encoded_len;
use tandem_runtime::fl::Layout;
use tandem_runtime::fl::update::tensor_codec;
use tandem_runtime::rng::SplitMix64;
use tandem_runtime::wire::CodecDesc;

/// Classes in a profile file at most.
const MAX_CLASSES: usize = 64;
/// Profile file bytes at most.
const MAX_PROFILE_BYTES: u64 = 64 << 10;
/// A plan fills this share of the deadline, keeping the rest for the unexpected.
const SAFETY: f64 = 0.9;
/// The compression ladder after the round codec, least compressed first.
const LADDER: [CodecDesc; 5] = [
    CodecDesc::F16,
    CodecDesc::Int8 { block: 64 },
    CodecDesc::TopK { ratio_ppm: 100_000 },
    CodecDesc::TopK { ratio_ppm: 30_000 },
    CodecDesc::TopK { ratio_ppm: 10_000 },
];

/// One kind of device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceClass {
    /// Its name in reports (`pi-zero`).
    pub name: String,
    /// Its share of the population (relative weights).
    pub share: f64,
    /// Milliseconds per local training step.
    pub step_ms: f64,
    /// Uplink throughput, kilobytes per second.
    pub uplink_kb_per_s: f64,
}

/// The device classes of a simulated population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// The classes.
    pub classes: Vec<DeviceClass>,
}

/// Why a profile file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The file is not a valid profile.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Profiles {
    /// Reads and checks a profile (JSON: `{"classes": [{"name", "share", "step_ms",
    /// "uplink_kb_per_s"}, ..]}`).
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let read = |reason: String| ProfileError::Read {
            path: shown.clone(),
            reason,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| read(e.to_string()))?
            .len();
        if size > MAX_PROFILE_BYTES {
            return Err(read(format!("{size} bytes, at most {MAX_PROFILE_BYTES}")));
        }
        let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
        let profiles: Self = serde_json::from_slice(&bytes).map_err(|e| ProfileError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        profiles.check().map_err(|reason| ProfileError::Invalid {
            path: shown,
            reason,
        })?;
        Ok(profiles)
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_CLASSES).contains(&self.classes.len()) {
            return Err(format!(
                "1..={MAX_CLASSES} classes, not {}",
                self.classes.len()
            ));
        }
        for c in &self.classes {
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if !(positive(c.share) && positive(c.step_ms) && positive(c.uplink_kb_per_s)) {
                return Err(format!(
                    "class `{}`: share, step_ms and uplink_kb_per_s must be finite and above 0",
                    c.name
                ));
            }
        }
        Ok(())
    }

    /// The class of each of `clients`: counts in proportion to the shares (largest
    /// remainders), shuffled with `seed`.
    pub fn assign(&self, clients: usize, seed: u64) -> Vec<usize> {
        let total: f64 = self.classes.iter().map(|c| c.share).sum();
        let exact: Vec<f64> = self
            .classes
            .iter()
            .map(|c| c.share / total * clients as f64)
            .collect();
        let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
        let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
        by_remainder.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        let short = clients - counts.iter().sum::<usize>();
        for &c in by_remainder.iter().take(short) {
            counts[c] += 1;
        }
        let mut classes: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
            .collect();
        SplitMix64::new(seed ^ 0xada7).shuffle(&mut classes);
        classes
    }

    /// The slowest step over the fastest, and the fastest uplink over the slowest.
    pub fn spread(&self) -> (f64, f64) {
        let range = |f: fn(&DeviceClass) -> f64| {
            let values = self.classes.iter().map(f);
            let max = values.clone().fold(f64::MIN, f64::max);
            let min = values.fold(f64::MAX, f64::min);
            max / min
        };
        (range(|c| c.step_ms), range(|c| c.uplink_kb_per_s))
    }
}

/// Why a device planned what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The full local work with the round codec fits.
    Fits,
    /// The full work fits once the update is compressed further.
    Compressed,
    /// Even the most compressed update leaves time for fewer steps only.
    FewerSteps,
    /// Not one step fits: the device sits the round out.
    SitsOut,
    /// Not adapting, the full work with the round codec misses the deadline.
    Straggler,
}

/// What a device does in a round, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The simulated client.
    pub client: usize,
    /// Its class's name.
    pub class: String,
    /// Local steps it takes.
    pub steps: u64,
    /// The round's full local work, in steps.
    pub full_steps: u64,
    /// The codec it sends with.
    pub codec: CodecDesc,
    /// Its simulated round time, seconds.
    pub seconds: f64,
    /// Why.
    pub reason: Reason,
}

impl Plan {
    /// Whether its update arrives by the deadline.
    pub fn reports(&self) -> bool {
        !matches!(self.reason, Reason::SitsOut | Reason::Straggler)
    }
}

/// The most bytes an update of `layout` takes under `codec` (every tensor behind its
/// 4-byte length); `None` for a codec whose size depends on the round (ACP).
pub fn update_bytes_bound(layout: &Layout, codec: CodecDesc) -> Option<usize> {
    layout
        .specs()
        .iter()
        .map(|spec| {
            max_encoded_len(tensor_codec(codec, spec.elements()), spec.matrix()).map(|b| b + 4)
        })
        .sum()
}

/// The ladder a device adapts along: the round codec, then each level of [`LADDER`]
/// smaller than the one before, with their update sizes.
pub fn ladder(layout: &Layout, round_codec: CodecDesc) -> Option<Vec<(CodecDesc, usize)>> {
    let first = update_bytes_bound(layout, round_codec)?;
    let mut levels = vec![(round_codec, first)];
    for codec in LADDER {
        let bytes = update_bytes_bound(layout, codec)?;
        if bytes < levels.last().map_or(usize::MAX, |l| l.1) {
            levels.push((codec, bytes));
        }
    }
    Some(levels)
}

/// The plan of `client` of `class` for `full_steps` of work under `deadline_s`.
pub fn plan(
    client: usize,
    class: &DeviceClass,
    full_steps: u64,
    ladder: &[(CodecDesc, usize)],
    deadline_s: f64,
    adapt: bool,
) -> Plan {
    let step_s = class.step_ms / 1e3;
    let upload_s = |bytes: usize| bytes as f64 / (class.uplink_kb_per_s * 1e3);
    let made = |steps: u64, (codec, bytes): (CodecDesc, usize), reason| Plan {
        client,
        class: class.name.clone(),
        steps,
        full_steps,
        codec,
        seconds: steps as f64 * step_s + upload_s(bytes),
        reason,
    };
    let (round_codec, round_bytes) = ladder[0];
    if !adapt {
        let plan = made(full_steps, (round_codec, round_bytes), Reason::Fits);
        let reason = if plan.seconds <= deadline_s {
            Reason::Fits
        } else {
            Reason::Straggler
        };
        return Plan { reason, ..plan };
    }
    let budget = SAFETY * deadline_s;
    let steps_within = |bytes: usize| {
        let left = budget - upload_s(bytes);
        if left <= 0.0 {
            0
        } else {
            ((left / step_s).floor() as u64).min(full_steps)
        }
    };
    if let Some(at) = ladder
        .iter()
        .position(|&(_, b)| steps_within(b) == full_steps)
    {
        let reason = if at == 0 {
            Reason::Fits
        } else {
            Reason::Compressed
        };
        return made(full_steps, ladder[at], reason);
    }
    // The dense level leaving the most steps, if that is half the work or more; else
    // any level leaving the most (the least compressed of equals).
    let steps: Vec<u64> = ladder.iter().map(|l| steps_within(l.1)).collect();
    let most = |keep: &dyn Fn(usize) -> bool| {
        (0..ladder.len())
            .filter(|&i| keep(i))
            .fold(None, |b: Option<usize>, i| match b {
                Some(b) if steps[b] >= steps[i] => Some(b),
                _ => Some(i),
            })
    };
    let dense = most(&|i| !matches!(ladder[i].0, CodecDesc::TopK { .. }));
    let at = match dense {
        Some(d) if steps[d] >= full_steps.div_ceil(2) => d,
        _ => most(&|_| true).unwrap_or(0),
    };
    let (best, steps) = (ladder[at], steps[at]);
    if steps == 0 {
        return Plan {
            seconds: 0.0,
            ..made(0, best, Reason::SitsOut)
        };
    }
    made(steps, best, Reason::FewerSteps)
}

/// One line per class over `plans`: devices sampled, the share that reported, their
/// steps against the full work, and the codecs they sent with.
pub fn summary<'a>(profiles: &Profiles, plans: impl Iterator<Item = &'a Plan>) -> Vec<String> {
    let plans: Vec<&Plan> = plans.collect();
    profiles
        .classes
        .iter()
        .map(|class| {
            let mine: Vec<&&Plan> = plans.iter().filter(|p| p.class == class.name).collect();
            let reported: Vec<&&&Plan> = mine.iter().filter(|p| p.reports()).collect();
            let steps: u64 = reported.iter().map(|p| p.steps).sum();
            let full: u64 = reported.iter().map(|p| p.full_steps).sum();
            let mut codecs: Vec<(String, usize)> = Vec::new();
            for p in &reported {
                let name = p.codec.to_string();
                match codecs.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, count)) => *count += 1,
                    None => codecs.push((name, 1)),
                }
            }
            let codecs: Vec<String> = codecs.iter().map(|(n, c)| format!("{n} x{c}")).collect();
            format!(
                "{}: {} sampled, {:.1}% reported, {:.1}% of the full steps, codecs {}",
                class.name,
                mine.len(),
                100.0 * reported.len() as f64 / mine.len().max(1) as f64,
                100.0 * steps as f64 / full.max(1) as f64,
                if codecs.is_empty() {
                    "-".to_string()
                } else {
                    codecs.join(", ")
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(step_ms: f64, uplink_kb_per_s: f64) -> DeviceClass {
        DeviceClass {
            name: "c".into(),
            share: 1.0,
            step_ms,
            uplink_kb_per_s,
        }
    }

    /// The round codec (1,000 KB), then top-k levels of 100, 30 and 10 KB.
    fn levels() -> Vec<(CodecDesc, usize)> {
        vec![
            (CodecDesc::Identity, 1_000_000),
            (CodecDesc::TopK { ratio_ppm: 100_000 }, 100_000),
            (CodecDesc::TopK { ratio_ppm: 30_000 }, 30_000),
            (CodecDesc::TopK { ratio_ppm: 10_000 }, 10_000),
        ]
    }

    #[test]
    fn a_device_compresses_before_it_cuts_steps_and_sits_out_last() {
        // 20 steps of 50 ms = 1 s; 1 MB at 1 MB/s = 1 s; deadline 2.5 s (plans fill 2.25).
        let fast = plan(0, &class(50.0, 1000.0), 20, &levels(), 2.5, true);
        assert_eq!(
            (fast.reason, fast.steps, fast.codec),
            (Reason::Fits, 20, CodecDesc::Identity)
        );
        // A 10x slower uplink: 10 s for the f32 update, 1 s at top-10%: compressed.
        let thin = plan(0, &class(50.0, 100.0), 20, &levels(), 2.5, true);
        assert_eq!(thin.reason, Reason::Compressed);
        assert_eq!(thin.codec, CodecDesc::TopK { ratio_ppm: 100_000 });
        assert!(thin.seconds <= 2.25 && thin.steps == 20);
        // 4x slower steps as well: 4 s of work cannot fit; half of it (10 steps) first
        // fits with the smallest update: (2.25 - 0.1) / 0.2 = 10.75.
        let slow = plan(0, &class(200.0, 100.0), 20, &levels(), 2.5, true);
        assert_eq!((slow.reason, slow.steps), (Reason::FewerSteps, 10));
        assert_eq!(slow.codec, CodecDesc::TopK { ratio_ppm: 10_000 });
        assert!(slow.seconds <= 2.5);
        // Not one step fits.
        let hopeless = plan(0, &class(5000.0, 100.0), 20, &levels(), 2.5, true);
        assert_eq!(hopeless.reason, Reason::SitsOut);
        assert!(!hopeless.reports());
        // Without adapting, the thin uplink's device is a straggler.
        let fixed = plan(0, &class(50.0, 100.0), 20, &levels(), 2.5, false);
        assert_eq!((fixed.reason, fixed.steps), (Reason::Straggler, 20));
        assert!((fixed.seconds - 11.0).abs() < 1e-9);
    }

    #[test]
    fn classes_are_assigned_by_share() {
        let profiles = Profiles {
            classes: vec![
                DeviceClass {
                    share: 3.0,
                    ..class(1.0, 1.0)
                },
                DeviceClass {
                    share: 1.0,
                    ..class(4.0, 10.0)
                },
            ],
        };
        let classes = profiles.assign(10, 1);
        assert_eq!(classes.iter().filter(|&&c| c == 0).count(), 8);
        assert_eq!(classes.len(), 10);
        assert_eq!(profiles.spread(), (4.0, 10.0));
        assert_eq!(profiles.assign(10, 1), classes);
    }

    #[test]
    fn a_bad_profile_is_named() {
        let dir = std::env::temp_dir().join(format!("tandem-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.json");
        std::fs::write(
            &path,
            r#"{"classes": [{"name": "a", "share": 1, "step_ms": 0, "uplink_kb_per_s": 5}]}"#,
        )
        .unwrap();
        let err = Profiles::load(&path).unwrap_err().to_string();
        assert!(err.contains("class `a`"), "{err}");
        std::fs::write(&path, r#"{"classes": [{"name": "a", "share": 1}]}"#).unwrap();
        assert!(Profiles::load(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
