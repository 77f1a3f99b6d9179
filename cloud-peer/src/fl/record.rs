//! One round's figures, as the simulation and the networked app report them, and the
//! plot of a run.

use super::adapt::Plan;
use tandem_runtime::fl::Layout;
use tandem_runtime::fl::update::identity_len;
use tandem_runtime::plot::{self, Chart, Series};
use tandem_runtime::wire::{
    CodecDesc, ModelPayload, NodeName, RoundConfig, RoundTask, Update, wire_bytes,
};

/// One round's figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u64,
    /// Test accuracy of the new global model; `None` for a round not evaluated
    /// (`--eval-every`, or an evaluation that failed).
    pub accuracy: Option<f64>,
    /// Test loss of the new global model, when evaluated.
    pub loss: Option<f64>,
    /// Mean training loss the valid updates reported ([`mean_train_loss`]).
    pub train_loss: Option<f64>,
    /// Clients sampled.
    pub sampled: usize,
    /// Updates aggregated.
    pub aggregated: usize,
    /// Updates refused by validation.
    pub refused: usize,
    /// The nodes whose valid update went to the strategy, in node order (each at most
    /// once: the hub counts a node once per round).
    #[serde(default)]
    pub contributors: Vec<NodeName>,
    /// Sampled clients that sent nothing (could not train, or missed the deadline).
    #[serde(default)]
    pub dropped: usize,
    /// Updates clipped to the norm bound.
    pub clipped: usize,
    /// Bytes of all Update messages on the wire.
    pub uplink_bytes: u64,
    /// Bytes of all RoundTask messages on the wire (the model, whole or as a delta, to
    /// each participant).
    pub downlink_bytes: u64,
    /// Wall time of the round, evaluation included.
    pub seconds: f64,
    /// Privacy spent up to and including this round (central DP only), at the run's
    /// delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// The round's simulated duration under a device model: the latest reporting
    /// device's time (simulation with `--profiles` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated_seconds: Option<f64>,
    /// What each sampled device planned and why (simulation with `--profiles` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<Plan>,
}

impl RoundRecord {
    /// The round's progress line: its number out of `rounds`, or, when the rounds
    /// `committed` so far differ from it (a networked run's aborted rounds take numbers
    /// too), that count beside it.
    pub fn line(&self, committed: u64, rounds: u64) -> String {
        let train = self
            .train_loss
            .map_or(String::new(), |l| format!(", train loss {l:.3}"));
        let epsilon = self
            .epsilon
            .map_or(String::new(), |e| format!(", epsilon {e:.2}"));
        let test = match (self.accuracy, self.loss) {
            (Some(a), Some(l)) => format!("test accuracy {:.2}% loss {l:.3}", a * 100.0),
            _ => "not evaluated".to_string(),
        };
        let progress = if committed == self.round {
            format!("{:>4}/{rounds}", self.round)
        } else {
            format!("{:>4} ({committed}/{rounds} committed)", self.round)
        };
        format!(
            "round {progress}: {test}{train}, {} aggregated, {} refused, up {:.1} KB, {:.1} s{epsilon}",
            self.aggregated,
            self.refused,
            self.uplink_bytes as f64 / 1e3,
            self.seconds
        )
    }
}

/// The mean of the training losses the round's valid updates reported; non-finite ones
/// (informational, from the devices) are left out. `None` when none is left.
pub fn mean_train_loss(losses: &[f32]) -> Option<f64> {
    let finite: Vec<f64> = losses
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| f64::from(l))
        .collect();
    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
}

/// Wire bytes of one identity (f32) update of `layout`, headers included: the baseline
/// of every uplink reduction.
pub fn identity_update_bytes(layout: &Layout) -> u64 {
    let payload = identity_len(layout);
    let update = Update {
        round: 1,
        node: NodeName::new(),
        num_examples: 1,
        train_loss: 0.0,
        codec: CodecDesc::Identity,
        payload_len: payload as u64,
    };
    wire_bytes(&update, payload).unwrap_or(payload) as u64
}

/// Wire bytes of one RoundTask carrying `layout`'s full identity (f32) model, headers
/// included: the baseline of every downlink reduction.
pub fn identity_task_bytes(layout: &Layout) -> u64 {
    let payload = identity_len(layout);
    let task = RoundTask {
        round: 1,
        deadline_ms: 60_000,
        config: RoundConfig {
            local_epochs: 1,
            batch_size: 1,
            lr: 0.0,
            proximal_mu: 0.0,
        },
        model: ModelPayload::Full,
        model_codec: CodecDesc::Identity,
        update_codec: CodecDesc::Identity,
        payload_len: payload as u64,
        factors_len: 0,
    };
    wire_bytes(&task, payload).unwrap_or(payload) as u64
}

/// The downlink of a run against full f32 models to every participant; `None` before
/// any round.
pub fn downlink_summary(records: &[RoundRecord], identity_task: u64) -> Option<String> {
    records.last()?;
    let downlink: u64 = records.iter().map(|r| r.downlink_bytes).sum();
    let sent: u64 = records.iter().map(|r| r.sampled as u64).sum();
    let identity = identity_task * sent;
    Some(format!(
        "fl: downlink {:.2} MB, {:.1}x less than full f32 models ({:.2} MB)",
        downlink as f64 / 1e6,
        identity as f64 / downlink.max(1) as f64,
        identity as f64 / 1e6
    ))
}

/// The last evaluated accuracy of a run, with its round.
pub fn last_accuracy(records: &[RoundRecord]) -> Option<(u64, f64)> {
    records
        .iter()
        .rev()
        .find_map(|r| r.accuracy.map(|a| (r.round, a)))
}

/// A run's last line: accuracy, rounds, and the uplink against identity updates of the
/// same count (every update received, used or refused); `None` before any round.
pub fn summary(records: &[RoundRecord], identity_update: u64) -> Option<String> {
    let last = records.last()?;
    let uplink: u64 = records.iter().map(|r| r.uplink_bytes).sum();
    let updates: u64 = records
        .iter()
        .map(|r| (r.sampled - r.dropped.min(r.sampled)) as u64)
        .sum();
    let identity = identity_update * updates;
    let accuracy = match last_accuracy(records) {
        Some((round, a)) if round == last.round => format!("test accuracy {:.2}%", a * 100.0),
        Some((round, a)) => format!("test accuracy {:.2}% (round {round})", a * 100.0),
        None => "not evaluated".to_string(),
    };
    Some(format!(
        "fl: {} rounds done, {accuracy}; uplink {:.2} MB, {:.1}x less than identity f32 updates ({:.2} MB)",
        last.round,
        uplink as f64 / 1e6,
        identity as f64 / uplink.max(1) as f64,
        identity as f64 / 1e6
    ))
}

/// Test accuracy against round and against cumulative uplink bytes, as a PNG.
pub fn plot_png(records: &[RoundRecord]) -> Vec<u8> {
    let by_round: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| Some((r.round as f64, r.accuracy? * 100.0)))
        .collect();
    let mut uplink = 0u64;
    let by_bytes: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| {
            uplink += r.uplink_bytes;
            Some((uplink as f64 / 1e6, r.accuracy? * 100.0))
        })
        .collect();
    plot::png(&[
        Chart {
            title: "GLOBAL MODEL: TEST ACCURACY BY ROUND",
            x_label: "ROUND",
            y_label: "ACCURACY (%)",
            series: &[Series {
                label: "GLOBAL MODEL",
                points: &by_round,
            }],
        },
        Chart {
            title: "TEST ACCURACY BY BYTES SENT UP",
            x_label: "CUMULATIVE UPLINK (MB, ALL DEVICES)",
            y_label: "ACCURACY (%)",
            series: &[Series {
                label: "GLOBAL MODEL",
                points: &by_bytes,
            }],
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_counts_committed_rounds_beside_a_round_number_past_them() {
        let record = RoundRecord {
            round: 12,
            accuracy: Some(0.875),
            loss: Some(0.4),
            train_loss: None,
            sampled: 10,
            aggregated: 10,
            refused: 0,
            clipped: 0,
            contributors: Vec::new(),
            dropped: 0,
            uplink_bytes: 2_000,
            downlink_bytes: 0,
            seconds: 1.5,
            epsilon: None,
            simulated_seconds: None,
            plans: Vec::new(),
        };
        assert!(
            record
                .line(12, 20)
                .starts_with("round   12/20: test accuracy 87.50%")
        );
        // Two rounds aborted before it: the twelfth round is the tenth committed.
        let line = record.line(10, 10);
        assert!(line.starts_with("round   12 (10/10 committed): "), "{line}");
    }
}
