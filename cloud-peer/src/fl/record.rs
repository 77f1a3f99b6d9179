//! One round's figures, as the simulation and the networked app report them, and the
//! plot of a run.

use tandem_runtime::plot::{self, Chart};

/// One round's figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u64,
    /// Test accuracy of the new global model.
    pub accuracy: f64,
    /// Test loss of the new global model.
    pub loss: f64,
    /// Mean training loss of the participants (simulation; updates on the wire carry none).
    pub train_loss: Option<f64>,
    /// Clients sampled.
    pub sampled: usize,
    /// Updates aggregated.
    pub aggregated: usize,
    /// Updates refused by validation.
    pub refused: usize,
    /// Sampled clients that sent nothing (could not train, or missed the deadline).
    #[serde(default)]
    pub dropped: usize,
    /// Updates clipped to the norm bound.
    pub clipped: usize,
    /// Bytes of all Update messages on the wire.
    pub uplink_bytes: u64,
    /// Bytes of all RoundTask messages on the wire (the full model to each client).
    pub downlink_bytes: u64,
    /// Wall time of the round, evaluation included.
    pub seconds: f64,
}

/// Test accuracy against round and against cumulative uplink bytes, as a PNG.
pub fn plot_png(records: &[RoundRecord]) -> Vec<u8> {
    let by_round: Vec<(f64, f64)> = records
        .iter()
        .map(|r| (r.round as f64, r.accuracy * 100.0))
        .collect();
    let mut uplink = 0u64;
    let by_bytes: Vec<(f64, f64)> = records
        .iter()
        .map(|r| {
            uplink += r.uplink_bytes;
            (uplink as f64 / 1e6, r.accuracy * 100.0)
        })
        .collect();
    plot::png(&[
        Chart {
            title: "GLOBAL MODEL: TEST ACCURACY BY ROUND",
            x_label: "ROUND",
            y_label: "ACCURACY (%)",
            points: &by_round,
        },
        Chart {
            title: "TEST ACCURACY BY BYTES SENT UP",
            x_label: "CUMULATIVE UPLINK (MB, ALL DEVICES)",
            y_label: "ACCURACY (%)",
            points: &by_bytes,
        },
    ])
}
