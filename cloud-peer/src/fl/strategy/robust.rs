//! The robust rules: they ignore example counts (a liar cannot buy weight) and run on
//! the kernels: coordinate-wise median and trimmed mean (`tandem_kernels::robust`), Krum
//! and Multi-Krum (Blanchard et al. 2017).

use super::{Aggregated, ClientUpdate, Strategy, StrategyError, apply_step, check_round};

/// Applies a coordinate-wise `kernel` of the round's deltas (every update enters it).
fn coordinate_wise(
    global: &mut [f32],
    updates: &[ClientUpdate],
    kernel: impl FnOnce(&[&[f32]]) -> Result<Vec<f32>, tandem_kernels::KernelError>,
) -> Result<Aggregated, StrategyError> {
    check_round(global, updates)?;
    let rows: Vec<&[f32]> = updates.iter().map(|u| u.delta.as_slice()).collect();
    apply_step(global, &kernel(&rows)?)?;
    Ok(Aggregated {
        selected: (0..updates.len()).collect(),
    })
}

/// Coordinate-wise median.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Median;

impl Strategy for Median {
    fn spec(&self) -> String {
        "median".into()
    }

    fn fresh(&self) -> Box<dyn Strategy> {
        Box::new(*self)
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        updates: &[ClientUpdate],
    ) -> Result<Aggregated, StrategyError> {
        coordinate_wise(global, updates, tandem_kernels::median)
    }
}

/// Coordinate-wise mean without the `beta` share at each end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrimmedMean {
    /// Share trimmed at each end, in [0, 0.5).
    pub beta: f32,
}

impl Strategy for TrimmedMean {
    fn spec(&self) -> String {
        format!("trimmed-mean:beta={}", self.beta)
    }

    fn fresh(&self) -> Box<dyn Strategy> {
        Box::new(*self)
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        updates: &[ClientUpdate],
    ) -> Result<Aggregated, StrategyError> {
        coordinate_wise(global, updates, |rows| {
            tandem_kernels::trimmed_mean(rows, self.beta)
        })
    }
}

/// The `keep` updates with the lowest Krum scores, averaged (Krum when `keep` is 1), for
/// at most `byzantine` hostile clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Krum {
    /// Hostile clients tolerated (f).
    pub byzantine: usize,
    /// Updates kept (m).
    pub keep: usize,
}

impl Strategy for Krum {
    fn spec(&self) -> String {
        match self.keep {
            1 => format!("krum:f={}", self.byzantine),
            keep => format!("multi-krum:f={},m={keep}", self.byzantine),
        }
    }

    fn fresh(&self) -> Box<dyn Strategy> {
        Box::new(*self)
    }

    /// Krum's guarantee needs `2f + 3` updates.
    fn min_updates(&self) -> usize {
        2 * self.byzantine + 3
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        updates: &[ClientUpdate],
    ) -> Result<Aggregated, StrategyError> {
        check_round(global, updates)?;
        let selected = krum_select(updates, self.byzantine, self.keep)?;
        // The plain mean of the kept: a claimed example count gives no weight.
        let step: Vec<f32> = (0..global.len())
            .map(|j| {
                let sum: f64 = selected
                    .iter()
                    .map(|&i| f64::from(updates[i].delta[j]))
                    .sum();
                (sum / selected.len() as f64) as f32
            })
            .collect();
        apply_step(global, &step)?;
        Ok(Aggregated { selected })
    }
}

/// Multi-Krum: the `keep` updates whose `n - f - 2` nearest neighbours are closest.
fn krum_select(
    updates: &[ClientUpdate],
    byzantine: usize,
    keep: usize,
) -> Result<Vec<usize>, StrategyError> {
    let n = updates.len();
    let needed = 2 * byzantine + 3;
    if n < needed {
        return Err(StrategyError::TooFew {
            byzantine,
            needed,
            got: n,
        });
    }
    let mut distance = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let d: f64 = updates[i]
                .delta
                .iter()
                .zip(&updates[j].delta)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            distance[i * n + j] = d;
            distance[j * n + i] = d;
        }
    }
    let neighbours = n - byzantine - 2;
    let mut scores: Vec<(f64, usize)> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| distance[i * n + j])
                .collect();
            row.sort_unstable_by(f64::total_cmp);
            (row[..neighbours].iter().sum(), i)
        })
        .collect();
    scores.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut selected: Vec<usize> = scores.iter().take(keep.min(n)).map(|&(_, i)| i).collect();
    selected.sort_unstable();
    Ok(selected)
}
