//! A round's valid updates applied to the global model, the same way in a networked
//! round and in the simulation: the strategy's aggregate (a round it refuses, too few
//! for Krum or a non-finite aggregate, leaves the model as it was), then with the ACP
//! codec the next round's shared factors, made from what was applied. With central DP
//! the strategy sees one update, the noised mean of them all.

use super::central_dp::CentralDp;
use super::strategy::{ClientUpdate, Strategy};
use tandem_runtime::fl::Layout;
use tandem_runtime::fl::acp::SharedFactors;

/// Central DP for one round: the mechanism and the round's standard normal samples, one
/// per coordinate.
pub struct RoundNoise<'a> {
    /// The mechanism, charged for the round.
    pub dp: &'a mut CentralDp,
    /// The noise's samples.
    pub normals: Vec<f64>,
}

/// Applies `updates` to `global` with `strategy` (with `noise`, their noised mean; a round
/// with none still releases noise) and moves `factors` (ACP) on to the next round's;
/// returns the updates aggregated. `seed` fills factor directions the applied delta does
/// not span.
#[allow(clippy::too_many_arguments)]
pub fn apply_round(
    strategy: &mut dyn Strategy,
    global: &mut [f32],
    factors: &mut Option<SharedFactors>,
    layout: &Layout,
    updates: &[ClientUpdate],
    noise: Option<RoundNoise<'_>>,
    round: u64,
    seed: u64,
) -> usize {
    if let Some(RoundNoise { dp, normals }) = noise {
        let mean = [dp.noised_mean(updates, &normals)];
        let applied = apply_round(strategy, global, factors, layout, &mean, None, round, seed);
        return if applied > 0 { updates.len() } else { 0 };
    }
    if updates.is_empty() {
        tracing::warn!(round, "no valid update: the global model stays as it was");
        return 0;
    }
    let before = factors.is_some().then(|| global.to_vec());
    let used = match strategy.aggregate(global, updates) {
        Ok(used) => used.selected.len(),
        Err(err) => {
            tracing::warn!(round, "not aggregated: {err}");
            0
        }
    };
    if let (Some(shared), Some(before)) = (factors.as_ref(), before) {
        *factors = Some(shared.after_round(layout, &before, global, seed ^ round));
    }
    used
}
