//! What one split step may carry, agreed at Hello: the device declares its largest batch
//! and padded sequence ([`RunPlan::max_batch`], [`RunPlan::max_seq`]) and the width at
//! its cut, the cloud admits them against its own caps ([`StepCaps`]), and every
//! [`Activations`] header is checked against them before its tensor is read, decoded or
//! computed on: a small payload cannot announce a large decode.

use crate::codec::{Shape, max_encoded_len};
use crate::wire::{Activations, Hello, MAX_BATCH, RunPlan};

/// The longest padded sequence any split step may have (MiniLM's position table).
pub const MAX_SEQ: u16 = 512;

/// The shape of the largest step a device agreed to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepLimits {
    /// Sequences per step, at most.
    pub max_batch: u16,
    /// Padded tokens per sequence, at most.
    pub max_seq: u16,
    /// Values per token row at the cut (the hidden size, or the SFT code's rank).
    pub width: u16,
}

/// What a cloud computes per step at most, whatever a device asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepCaps {
    /// Tokens per step, padding included (batch x sequence): bounds every buffer.
    pub tokens: u64,
    /// Attention work per step and layer, batch x sequence^2.
    pub attention: u64,
}

impl Default for StepCaps {
    /// 16,384 tokens (e.g. 256 reviews of 64, or 32 of 512) and 4M attention scores
    /// (16 x 512^2): about 25 MB of hidden states at the cut.
    fn default() -> Self {
        Self {
            tokens: 16_384,
            attention: 1 << 22,
        }
    }
}

/// Why a step or a request is refused: one line for the device's operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StepRefused {
    /// Hello declared no step shape, or one past the wire's bounds.
    #[error(
        "steps of {max_batch} sequences of {max_seq} tokens: expected 1..={MAX_BATCH} sequences of 1..={MAX_SEQ}"
    )]
    Undeclared {
        /// Declared sequences per step.
        max_batch: u16,
        /// Declared tokens per sequence.
        max_seq: u16,
    },
    /// The declared step is over this cloud's caps.
    #[error(
        "steps of {max_batch} sequences of {max_seq} tokens are over this cloud's caps ({} tokens, {} attention scores per step): use a smaller --batch-size or --max-len",
        caps.tokens,
        caps.attention
    )]
    OverCaps {
        /// Declared sequences per step.
        max_batch: u16,
        /// Declared tokens per sequence.
        max_seq: u16,
        /// The cloud's caps.
        caps: StepCaps,
    },
    /// A step's batch is empty or larger than agreed.
    #[error("step {step}: a batch of {batch} sequences, agreed 1..={max}")]
    Batch {
        /// The step.
        step: u64,
        /// Its batch.
        batch: u16,
        /// The agreed bound.
        max: u16,
    },
    /// A step's padded length is longer than agreed.
    #[error("step {step}: sequences padded to {seq} tokens, agreed at most {max}")]
    Seq {
        /// The step.
        step: u64,
        /// Its padded length.
        seq: u16,
        /// The agreed bound.
        max: u16,
    },
    /// A step's per-sequence lists do not describe its batch.
    #[error("step {step}: {what} do not fit a batch of {batch} padded to {seq}")]
    Inconsistent {
        /// The step.
        step: u64,
        /// Which list.
        what: &'static str,
        /// Its batch.
        batch: u16,
        /// Its padded length.
        seq: u16,
    },
    /// A step's rows are not of the agreed width.
    #[error("step {step}: rows of width {found} at the cut, agreed {agreed}")]
    Width {
        /// The step.
        step: u64,
        /// The width it says.
        found: u16,
        /// The agreed width.
        agreed: u16,
    },
    /// A step's tensor is larger than its codec makes for its tokens (or the codec has
    /// no bound, or a cached step carries a tensor).
    #[error("step {step}: {found} tensor bytes, at most {max} for its tokens and codec")]
    Payload {
        /// The step.
        step: u64,
        /// Bytes announced.
        found: u64,
        /// Bytes its codec makes at most.
        max: u64,
    },
}

impl StepLimits {
    /// What `hello` declares: its run plan's step shape and its model's width at the cut.
    pub fn of(hello: &Hello) -> Self {
        Self::declared(&hello.plan, hello.model.hidden)
    }

    /// The step shape of `plan` with rows of `width`.
    pub fn declared(plan: &RunPlan, width: u16) -> Self {
        Self {
            max_batch: plan.max_batch,
            max_seq: plan.max_seq,
            width,
        }
    }

    /// Checks the declared shape against the wire's bounds and `caps`.
    pub fn admit(&self, caps: StepCaps) -> Result<(), StepRefused> {
        let (max_batch, max_seq) = (self.max_batch, self.max_seq);
        if !(1..=MAX_BATCH as u16).contains(&max_batch) || !(1..=MAX_SEQ).contains(&max_seq) {
            return Err(StepRefused::Undeclared { max_batch, max_seq });
        }
        let (batch, seq) = (u64::from(max_batch), u64::from(max_seq));
        if batch * seq > caps.tokens || batch * seq * seq > caps.attention {
            return Err(StepRefused::OverCaps {
                max_batch,
                max_seq,
                caps,
            });
        }
        Ok(())
    }

    /// Checks a step's header against the agreed shape, before its tensor is read;
    /// returns its real tokens (the rows of its tensor).
    pub fn check(&self, a: &Activations) -> Result<usize, StepRefused> {
        let step = a.step;
        if a.batch == 0 || a.batch > self.max_batch {
            return Err(StepRefused::Batch {
                step,
                batch: a.batch,
                max: self.max_batch,
            });
        }
        if a.seq > self.max_seq {
            return Err(StepRefused::Seq {
                step,
                seq: a.seq,
                max: self.max_seq,
            });
        }
        let batch = usize::from(a.batch);
        let inconsistent = |what| StepRefused::Inconsistent {
            step,
            what,
            batch: a.batch,
            seq: a.seq,
        };
        if a.seq_lens.len() != batch || a.seq_lens.iter().any(|&l| l == 0 || l > a.seq) {
            return Err(inconsistent("sequence lengths"));
        }
        if a.labels.len() != batch && !a.labels.is_empty() {
            return Err(inconsistent("labels"));
        }
        if !a.reviews.is_empty() && a.reviews.len() != batch {
            return Err(inconsistent("review ids"));
        }
        if a.hidden != self.width {
            return Err(StepRefused::Width {
                step,
                found: a.hidden,
                agreed: self.width,
            });
        }
        let tokens: usize = a.seq_lens.iter().map(|&l| usize::from(l)).sum();
        let max = if a.cached {
            0
        } else {
            max_encoded_len(a.codec, Shape::new(tokens, usize::from(self.width))).unwrap_or(0)
        };
        if a.payload_len > max as u64 {
            return Err(StepRefused::Payload {
                step,
                found: a.payload_len,
                max: max as u64,
            });
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CodecDesc;

    fn limits() -> StepLimits {
        StepLimits {
            max_batch: 16,
            max_seq: 64,
            width: 384,
        }
    }

    /// A step of `batch` sequences of `len` tokens, padded to `len`, in `codec` with
    /// the exact payload that codec makes.
    fn step(batch: u16, len: u16, codec: CodecDesc) -> Activations {
        let tokens = usize::from(batch) * usize::from(len);
        Activations {
            step: 7,
            train: true,
            batch,
            seq: len,
            hidden: 384,
            seq_lens: (0..batch).map(|_| len).collect(),
            labels: (0..batch).map(|_| 1).collect(),
            reviews: heapless::Vec::new(),
            cached: false,
            codec,
            payload_len: crate::codec::encoded_len(codec, Shape::new(tokens, 384)).unwrap_or(0)
                as u64,
        }
    }

    #[test]
    fn a_step_within_its_declared_shape_passes_with_its_token_count() {
        let a = step(16, 64, CodecDesc::Identity);
        assert_eq!(limits().check(&a), Ok(16 * 64));
        let mut short = step(3, 10, CodecDesc::Int8 { block: 64 });
        short.seq_lens[1] = 4;
        short.payload_len =
            crate::codec::encoded_len(short.codec, Shape::new(24, 384)).unwrap() as u64;
        assert_eq!(limits().check(&short), Ok(24));
    }

    #[test]
    fn every_way_past_the_declared_shape_is_refused_from_the_header() {
        let l = limits();
        assert!(matches!(
            l.check(&step(17, 8, CodecDesc::Identity)),
            Err(StepRefused::Batch { batch: 17, .. })
        ));
        assert!(matches!(
            l.check(&step(0, 8, CodecDesc::Identity)),
            Err(StepRefused::Batch { batch: 0, .. })
        ));
        assert!(matches!(
            l.check(&step(2, 65, CodecDesc::Identity)),
            Err(StepRefused::Seq { seq: 65, .. })
        ));
        let mut long = step(2, 8, CodecDesc::Identity);
        long.seq_lens[0] = 9;
        assert!(matches!(
            l.check(&long),
            Err(StepRefused::Inconsistent { .. })
        ));
        let mut narrow = step(2, 8, CodecDesc::Identity);
        narrow.hidden = 383;
        assert!(matches!(l.check(&narrow), Err(StepRefused::Width { .. })));
        // A rank-1 low-rank payload is small, but its decode is tokens x width: the
        // payload must be exactly what the codec makes for the step's real tokens.
        let lowrank = CodecDesc::LowRank {
            rank: 1,
            power_iters: 0,
            factor_bits: 8,
        };
        let mut oversized = step(16, 64, lowrank);
        oversized.seq_lens[0] = 1;
        assert!(matches!(
            l.check(&oversized),
            Err(StepRefused::Payload { .. })
        ));
        let mut cached = step(2, 8, CodecDesc::Identity);
        cached.cached = true;
        assert!(matches!(
            l.check(&cached),
            Err(StepRefused::Payload { max: 0, .. })
        ));
        let acp = step(
            2,
            8,
            CodecDesc::Acp {
                rank: 2,
                factor_bits: 8,
            },
        );
        let acp = Activations {
            payload_len: 1,
            ..acp
        };
        assert!(matches!(l.check(&acp), Err(StepRefused::Payload { .. })));
    }

    #[test]
    fn a_cloud_admits_declared_shapes_within_its_caps_only() {
        let caps = StepCaps::default();
        assert_eq!(limits().admit(caps), Ok(()));
        for (max_batch, max_seq) in [(0, 64), (16, 0), (257, 64), (16, 513)] {
            let l = StepLimits {
                max_batch,
                max_seq,
                width: 384,
            };
            assert!(matches!(l.admit(caps), Err(StepRefused::Undeclared { .. })));
        }
        // 256 x 512 is within the wire's bounds but 131,072 tokens: over the caps.
        let huge = StepLimits {
            max_batch: 256,
            max_seq: 512,
            width: 384,
        };
        assert!(matches!(
            huge.admit(caps),
            Err(StepRefused::OverCaps { .. })
        ));
        // 64 x 256 is 16,384 tokens but 4.2M attention scores x 1: just within; 65 x
        // 256 is not.
        let at_caps = StepLimits {
            max_batch: 64,
            max_seq: 256,
            width: 384,
        };
        assert_eq!(at_caps.admit(caps), Ok(()));
        let past = StepLimits {
            max_batch: 65,
            ..at_caps
        };
        assert!(matches!(
            past.admit(caps),
            Err(StepRefused::OverCaps { .. })
        ));
    }
}
