//! Descriptions exchanged in Hello: what a peer can do, which model it runs, and which
//! codecs it can decode. Codec parameters travel with every tensor too, so a receiver
//! refuses what it cannot decode instead of misreading it.

use serde::{Deserialize, Serialize};

/// A set of protocol features, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// No features.
    pub const NONE: Self = Self(0);
    /// Split fine-tuning (Activations / CutGradient / Eval / Metrics).
    pub const SPLIT: Self = Self(1);
    /// Federated rounds (Join / RoundTask / Update / RoundResult).
    pub const FL: Self = Self(1 << 1);
    /// Resuming a split step or FL round after a reconnect.
    pub const RESUME: Self = Self(1 << 2);

    /// Both sets' features.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The features both sets have.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether every feature of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// How a tensor's bytes are encoded (see `tandem_runtime::codec`, issue 5). Ratios are
/// in parts per million so the description is exact and hashable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CodecDesc {
    /// Raw little-endian f32.
    Identity,
    /// IEEE half precision.
    F16,
    /// int8 with one f32 scale per `block` values (0: one scale per row).
    Int8 {
        /// Values per scale.
        block: u16,
    },
    /// Rank-`rank` factors from `power_iters` power iterations, each factor sent at
    /// `factor_bits` (32, 16 or 8) bits.
    LowRank {
        /// Rank of the factorisation.
        rank: u16,
        /// Power iterations per step.
        power_iters: u8,
        /// Bits per factor entry.
        factor_bits: u8,
    },
    /// The largest `ratio_ppm` millionths of entries by magnitude, indices delta-coded.
    TopK {
        /// Fraction kept, in parts per million.
        ratio_ppm: u32,
    },
    /// Block DCT keeping `keep_ppm` millionths of the coefficients.
    Dct {
        /// Fraction kept, in parts per million.
        keep_ppm: u32,
    },
    /// One rank-`rank` factor against a factor the round shares (federated updates
    /// only; the shared factors follow the model in the round's payload), each entry at
    /// `factor_bits` (32, 16 or 8) bits.
    Acp {
        /// Rank of the factorisation.
        rank: u16,
        /// Bits per factor entry.
        factor_bits: u8,
    },
}

/// The codec as its command-line flag writes it (`topk:ratio=0.03`, `lowrank:r=4,bits=8,iters=1`).
impl std::fmt::Display for CodecDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ppm = |x: u32| f64::from(x) / 1e6;
        match *self {
            Self::Identity => write!(f, "identity"),
            Self::F16 => write!(f, "f16"),
            // The flag `int8` means blocks of 64 (the only block it takes).
            Self::Int8 { block: 64 } => write!(f, "int8"),
            Self::Int8 { block } => write!(f, "int8:block={block}"),
            Self::LowRank {
                rank,
                power_iters,
                factor_bits,
            } => write!(f, "lowrank:r={rank},bits={factor_bits},iters={power_iters}"),
            Self::TopK { ratio_ppm } => write!(f, "topk:ratio={}", ppm(ratio_ppm)),
            Self::Dct { keep_ppm } => write!(f, "dct:keep={}", ppm(keep_ppm)),
            Self::Acp { rank, factor_bits } => write!(f, "acp:r={rank},bits={factor_bits}"),
        }
    }
}

/// The run a split device plans, so the cloud schedules its top's learning rate over
/// the same steps and warm-up as the device's own, checkpoints its top where the device
/// checkpoints, and tells a reconnect from a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunPlan {
    /// Training steps of the run (0: not said; the cloud uses its own schedule).
    pub steps: u64,
    /// Warm-up steps of the learning rate.
    pub warmup: u64,
    /// Names the training run: random when it starts, kept in the device's checkpoint
    /// (0: none; the cloud keeps a device's top for as long as its request is the same).
    pub run: u64,
    /// Names the device process: random at every start, so the cloud tells a reconnect
    /// (same process) from a restart (another one).
    pub process: u64,
    /// The steps the device has trained when it sends this Hello: when a process
    /// starts, 0 or the step its checkpoint resumes at; on a reconnect, the step it
    /// sends next (a cloud restarted meanwhile resumes the top at exactly that step from
    /// its snapshot, or refuses).
    pub start_step: u64,
    /// The device checkpoints when this many steps are done (and at the end); the cloud
    /// snapshots its top at the same steps (0: never).
    pub checkpoint_every: u64,
    /// The most sequences a step (or evaluation batch) carries: with `max_seq`, the
    /// largest step the cloud agrees to compute, and refuses past before reading it.
    pub max_batch: u16,
    /// The longest padded sequence of a step, in tokens.
    pub max_seq: u16,
}

/// The model a device runs, so the cloud can refuse a mismatched top half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDesc {
    /// Model name, e.g. `all-MiniLM-L6-v2`.
    pub name: heapless::String<32>,
    /// Split: the number of layers on the device (0 when not splitting).
    pub cut: u8,
    /// Width of the tensors that cross the link (hidden size for split).
    pub hidden: u16,
}
