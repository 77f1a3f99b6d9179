//! A round's valid updates applied to the global model, the same way in a networked
//! round and in the simulation: the strategy's aggregate (a round it refuses, too few
//! for Krum or a non-finite aggregate, leaves the model as it was), then with the ACP
//! codec the next round's shared factors, made from what was applied.

use super::strategy::{ClientUpdate, Strategy};
use tandem_runtime::fl::Layout;
use tandem_runtime::fl::acp::SharedFactors;

/// Applies `updates` to `global` with `strategy` and moves `factors` (ACP) on to the
/// next round's; returns the updates aggregated. `seed` fills factor directions the
/// applied delta does not span.
pub fn apply_round(
    strategy: &mut Strategy,
    global: &mut [f32],
    factors: &mut Option<SharedFactors>,
    layout: &Layout,
    updates: &[ClientUpdate],
    round: u64,
    seed: u64,
) -> usize {
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
