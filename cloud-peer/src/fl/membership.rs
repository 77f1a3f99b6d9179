//! Who joined a federated run, and how many examples each declared.
//!
//! An admitted device is untrusted: its example count (its FedAvg weight) is fixed by its
//! first Join of the run and kept in the run's state, so a restarted cloud remembers it; a
//! later Join with another count is refused with its reason, never taken. A count must be
//! within the operator's cap (`--max-examples`), and an update weighs at most the count
//! its device declared (and the cap, should the operator have lowered it since). Within a
//! round, [`super::round_bounds`] caps the weights again, relative to the round's median.

use std::collections::BTreeMap;
use tandem_runtime::wire::NodeName;

/// Why a Join was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinRefusal {
    /// No examples, or more than the operator's cap.
    #[error("a Join declaring {claimed} examples is refused: this cloud takes 1..={cap}")]
    Examples {
        /// What the Join declared.
        claimed: u64,
        /// The cap.
        cap: u64,
    },
    /// The device declared another count earlier in the run.
    #[error(
        "this device joined the run declaring {declared} examples; a Join declaring {claimed} is refused (a count is fixed for the run)"
    )]
    Changed {
        /// The count of its first Join.
        declared: u64,
        /// What this Join declared.
        claimed: u64,
    },
}

/// The devices of a run and their declared example counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    declared: BTreeMap<NodeName, u64>,
    cap: u64,
}

impl Membership {
    /// The members saved with a run's state (a name that is not a node name is dropped),
    /// under the operator's `cap` (at least 1).
    pub fn restore(saved: &BTreeMap<String, u64>, cap: u64) -> Self {
        let declared = saved
            .iter()
            .filter_map(|(name, &count)| Some((NodeName::try_from(name.as_str()).ok()?, count)))
            .collect();
        Self {
            declared,
            cap: cap.max(1),
        }
    }

    /// The members as saved with the run's state.
    pub fn to_saved(&self) -> BTreeMap<String, u64> {
        self.declared
            .iter()
            .map(|(node, &count)| (node.to_string(), count))
            .collect()
    }

    /// `node` joins declaring `examples`: `Ok(true)` on its first Join, `Ok(false)` when
    /// it repeats its count (a reconnect); refused when the count is out of range or
    /// differs from its first.
    pub fn join(&mut self, node: &NodeName, examples: u64) -> Result<bool, JoinRefusal> {
        if let Some(&declared) = self.declared.get(node) {
            return if declared == examples {
                Ok(false)
            } else {
                Err(JoinRefusal::Changed {
                    declared,
                    claimed: examples,
                })
            };
        }
        if !(1..=self.cap).contains(&examples) {
            return Err(JoinRefusal::Examples {
                claimed: examples,
                cap: self.cap,
            });
        }
        self.declared.insert(node.clone(), examples);
        Ok(true)
    }

    /// The weight of an update from `node` claiming `claimed` examples: at most what the
    /// device declared and the cap; `None` for a device that never joined.
    pub fn weight(&self, node: &NodeName, claimed: u64) -> Option<u64> {
        let declared = *self.declared.get(node)?;
        Some(claimed.min(declared).min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeName {
        NodeName::try_from(name).unwrap()
    }

    #[test]
    fn the_first_join_fixes_the_count_for_the_run() {
        let mut members = Membership::restore(&BTreeMap::new(), 1 << 24);
        let honest = node("dev-1");
        assert_eq!(members.join(&honest, 600), Ok(true));
        // A reconnect repeats it.
        assert_eq!(members.join(&honest, 600), Ok(false));
        // Inflating it later is refused, and changes nothing.
        let inflated = members.join(&honest, 1 << 24).unwrap_err();
        assert_eq!(
            inflated,
            JoinRefusal::Changed {
                declared: 600,
                claimed: 1 << 24
            }
        );
        assert!(inflated.to_string().contains("declaring 600"), "{inflated}");
        assert_eq!(members.weight(&honest, 1 << 24), Some(600));
        assert_eq!(members.weight(&honest, 100), Some(100));
        // A device that never joined weighs nothing.
        assert_eq!(members.weight(&node("dev-2"), 10), None);
    }

    #[test]
    fn counts_outside_the_cap_are_refused_and_a_lowered_cap_binds_saved_counts() {
        let mut members = Membership::restore(&BTreeMap::new(), 1000);
        for bad in [0, 1001, u64::MAX] {
            assert_eq!(
                members.join(&node("dev-1"), bad),
                Err(JoinRefusal::Examples {
                    claimed: bad,
                    cap: 1000
                })
            );
        }
        assert!(members.to_saved().is_empty());
        members.join(&node("dev-1"), 1000).unwrap();
        // Saved with the state, restored by a cloud with a lower cap.
        let saved = members.to_saved();
        assert_eq!(saved, [("dev-1".to_string(), 1000)].into());
        let mut restored = Membership::restore(&saved, 500);
        assert_eq!(restored.weight(&node("dev-1"), 1000), Some(500));
        // What it declared before the restart still binds it.
        assert!(matches!(
            restored.join(&node("dev-1"), 400),
            Err(JoinRefusal::Changed { declared: 1000, .. })
        ));
    }
}
