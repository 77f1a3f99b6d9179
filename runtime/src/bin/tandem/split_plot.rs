//! The plot `tandem split` writes: dev accuracy against cumulative bytes sent up, with
//! the earlier runs it is compared with (`--plot-with`) as lines of their own.

use anyhow::{Context, Result, bail};
use std::path::Path;
use tandem_runtime::model::split::run::EvalRecord;
use tandem_runtime::plot::{self, Chart, PALETTE, Series};

/// The longest label drawn: one legend line within the chart.
pub(crate) const MAX_LABEL: usize = 40;

/// The earlier runs one plot may hold beside this one (a colour each).
pub(crate) const MAX_COMPARED: usize = PALETTE.len() - 1;

/// The largest metrics file read for a comparison.
const MAX_METRICS_BYTES: u64 = 64 << 20;

/// One run's dev accuracy (%) against cumulative uplink (MB).
pub(crate) struct Curve {
    pub(crate) label: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// `label` cut to [`MAX_LABEL`] characters.
pub(crate) fn label(label: &str) -> String {
    label.chars().take(MAX_LABEL).collect()
}

impl Curve {
    /// This run's curve.
    pub(crate) fn of(label_text: &str, dev: &[EvalRecord]) -> Self {
        Self {
            label: label(label_text),
            points: dev
                .iter()
                .map(|e| (e.up_bytes as f64 / 1e6, e.accuracy * 100.0))
                .collect(),
        }
    }

    /// The curve in a metrics file an earlier `tandem split` wrote; one clear line if the
    /// file is missing, too large, or not such a file.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let name = path.display();
        let len = std::fs::metadata(path)
            .with_context(|| format!("--plot-with {name}"))?
            .len();
        if len > MAX_METRICS_BYTES {
            bail!("--plot-with {name}: {len} bytes, more than a metrics file holds");
        }
        let bytes = std::fs::read(path).with_context(|| format!("--plot-with {name}"))?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("--plot-with {name}: not JSON"))?;
        let Some(dev) = json["dev"].as_array() else {
            bail!("--plot-with {name}: no dev evaluations (not a `tandem split --metrics` file?)");
        };
        let points = dev
            .iter()
            .filter_map(|e| {
                Some((
                    e["up_bytes"].as_f64()? / 1e6,
                    e["accuracy"].as_f64()? * 100.0,
                ))
            })
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let fallback = file_name.unwrap_or_else(|| "earlier run".into());
        Ok(Self {
            label: label(json["label"].as_str().unwrap_or(&fallback)),
            points,
        })
    }
}

/// The PNG of `curves`, this run's first.
pub(crate) fn png(curves: &[Curve]) -> Vec<u8> {
    let series: Vec<Series<'_>> = curves
        .iter()
        .map(|c| Series {
            label: &c.label,
            points: &c.points,
        })
        .collect();
    plot::png(&[Chart {
        title: "SPLIT FINE-TUNING: DEV ACCURACY BY BYTES SENT",
        x_label: "CUMULATIVE UPLINK (MB)",
        y_label: "DEV ACCURACY (%)",
        series: &series,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_earlier_runs_curve_and_refuses_other_files_with_one_line() {
        let dir = std::env::temp_dir().join(format!("tandem-split-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("identity.json");
        let json = serde_json::json!({
            "label": "identity",
            "dev": [
                {"step": 100, "accuracy": 0.7, "up_bytes": 2_000_000},
                {"step": 200, "accuracy": 0.8, "up_bytes": 4_000_000},
            ],
        });
        std::fs::write(&good, json.to_string()).unwrap();
        let curve = Curve::read(&good).unwrap();
        assert_eq!(curve.label, "identity");
        assert_eq!(curve.points, [(2.0, 70.0), (4.0, 80.0)]);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"steps\": []}").unwrap();
        for (path, says) in [
            (bad, "no dev evaluations"),
            (dir.join("missing.json"), "missing.json"),
        ] {
            let err = format!("{:#}", Curve::read(&path).err().expect("refused"));
            assert!(err.contains(says) && !err.contains('\n'), "{err}");
        }
        assert_eq!(label(&"x".repeat(100)).len(), MAX_LABEL);
        assert!(!png(&[curve]).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
