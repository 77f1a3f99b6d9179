//! Splitting a labelled data set among federated clients, deterministically from a seed
//! (the same seed gives every device and the simulator the same slices):
//! - `iid`: a shuffle cut into equal parts;
//! - `shards:K`: indices sorted by label, cut into `clients * K` equal shards, K shards
//!   per client (McMahan et al. 2017, "pathological non-IID");
//! - `dirichlet:ALPHA`: each class spread over the clients by proportions drawn from a
//!   symmetric Dirichlet(ALPHA) (Hsu et al. 2019); small ALPHA is more skewed.

use crate::rng::SplitMix64;
use std::fmt;
use std::str::FromStr;

/// Clients at most (a simulation holds a slice list per client).
pub const MAX_CLIENTS: usize = 100_000;

/// How data is split among clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Partition {
    /// Uniformly at random.
    Iid,
    /// This many label-sorted shards per client.
    Shards(u32),
    /// Label proportions from Dirichlet(alpha).
    Dirichlet(f64),
}

/// A partition that cannot be made.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum PartitionError {
    /// Not `iid`, `shards:K` or `dirichlet:ALPHA`.
    #[error("partition '{0}': expected iid, shards:K (K >= 1) or dirichlet:ALPHA (ALPHA > 0)")]
    Syntax(String),
    /// More clients than allowed, or none.
    #[error("{0} clients: expected 1..={MAX_CLIENTS}")]
    Clients(usize),
    /// A label outside the task's classes.
    #[error("label {label} is not below the {classes} classes")]
    Label {
        /// The label.
        label: u8,
        /// Classes of the task.
        classes: usize,
    },
    /// Fewer items than clients (or shards).
    #[error("{items} examples cannot make {parts} non-empty parts")]
    TooFewItems {
        /// Items in the data set.
        items: usize,
        /// Parts asked for.
        parts: usize,
    },
}

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PartitionError::Syntax(s.to_string());
        match s.split_once(':') {
            None if s == "iid" => Ok(Self::Iid),
            Some(("shards", k)) => match k.parse::<u32>() {
                Ok(k) if (1..=1000).contains(&k) => Ok(Self::Shards(k)),
                _ => Err(bad()),
            },
            Some(("dirichlet", a)) => match a.parse::<f64>() {
                Ok(a) if a.is_finite() && a > 0.0 && a <= 1e6 => Ok(Self::Dirichlet(a)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Iid => write!(f, "iid"),
            Self::Shards(k) => write!(f, "shards:{k}"),
            Self::Dirichlet(a) => write!(f, "dirichlet:{a}"),
        }
    }
}

impl Partition {
    /// The indices of `labels` (each below `classes`) that each of `clients` clients
    /// holds. Every index goes to exactly one client; under `iid` and `shards` every
    /// client gets the same count (the remainder is dropped), under `dirichlet` some may
    /// get few.
    pub fn assign(
        self,
        labels: &[u8],
        classes: usize,
        clients: usize,
        seed: u64,
    ) -> Result<Vec<Vec<usize>>, PartitionError> {
        if !(1..=MAX_CLIENTS).contains(&clients) {
            return Err(PartitionError::Clients(clients));
        }
        if let Some(&label) = labels.iter().find(|&&l| usize::from(l) >= classes) {
            return Err(PartitionError::Label { label, classes });
        }
        let mut rng = SplitMix64::new(seed);
        let mut order: Vec<usize> = (0..labels.len()).collect();
        rng.shuffle(&mut order);
        match self {
            Self::Iid => equal_parts(&order, clients, labels.len()),
            Self::Shards(k) => {
                let shards = clients * k as usize;
                // Stable by label over a shuffled order: shards within a label are random.
                order.sort_by_key(|&i| labels[i]);
                let pieces = equal_parts(&order, shards, labels.len())?;
                let mut shard_ids: Vec<usize> = (0..shards).collect();
                rng.shuffle(&mut shard_ids);
                Ok(shard_ids
                    .chunks(k as usize)
                    .map(|ids| {
                        ids.iter()
                            .flat_map(|&s| pieces[s].iter().copied())
                            .collect()
                    })
                    .collect())
            }
            Self::Dirichlet(alpha) => {
                let mut parts = vec![Vec::new(); clients];
                for class in 0..classes {
                    let members: Vec<usize> = order
                        .iter()
                        .copied()
                        .filter(|&i| labels[i] as usize == class)
                        .collect();
                    let shares = rng.dirichlet(alpha, clients);
                    let mut start = 0;
                    let mut cumulative = 0.0;
                    for (client, share) in shares.iter().enumerate() {
                        cumulative += share;
                        let end = if client + 1 == clients {
                            members.len()
                        } else {
                            ((cumulative * members.len() as f64).round() as usize)
                                .clamp(start, members.len())
                        };
                        parts[client].extend_from_slice(&members[start..end]);
                        start = end;
                    }
                }
                Ok(parts)
            }
        }
    }
}

/// `order` cut into `parts` equal consecutive pieces.
fn equal_parts(
    order: &[usize],
    parts: usize,
    items: usize,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    let per = items / parts;
    if per == 0 {
        return Err(PartitionError::TooFewItems { items, parts });
    }
    Ok(order
        .chunks_exact(per)
        .take(parts)
        .map(<[usize]>::to_vec)
        .collect())
}

/// `I/N`: client I (0-based) of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSlice {
    /// Which client.
    pub index: usize,
    /// Of how many.
    pub of: usize,
}

impl FromStr for ClientSlice {
    type Err = PartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)));
        match parsed {
            Some((index, of)) if index < of && of <= MAX_CLIENTS => Ok(Self { index, of }),
            Some((_, of)) if of > MAX_CLIENTS || of == 0 => Err(PartitionError::Clients(of)),
            _ => Err(PartitionError::Syntax(format!(
                "{s} (expected I/N with 0 <= I < N)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 10) as u8).collect()
    }

    fn classes_of(part: &[usize], labels: &[u8]) -> std::collections::BTreeSet<u8> {
        part.iter().map(|&i| labels[i]).collect()
    }

    #[test]
    fn every_partition_is_disjoint_and_reproducible() {
        let labels = labels(1000);
        for p in ["iid", "shards:2", "dirichlet:0.3", "dirichlet:100"] {
            let p: Partition = p.parse().unwrap();
            let parts = p.assign(&labels, 10, 10, 42).unwrap();
            assert_eq!(parts, p.assign(&labels, 10, 10, 42).unwrap(), "{p}");
            assert_ne!(parts, p.assign(&labels, 10, 10, 43).unwrap(), "{p}");
            let mut all: Vec<usize> = parts.concat();
            let total = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), total, "{p}: an index went to two clients");
            if p != Partition::Iid && !matches!(p, Partition::Shards(_)) {
                assert_eq!(total, 1000, "{p}: dirichlet keeps every index");
            }
        }
    }

    #[test]
    fn shards_give_each_client_at_most_k_labels_and_iid_gives_all() {
        let labels = labels(1000);
        let shards = Partition::Shards(2).assign(&labels, 10, 20, 1).unwrap();
        assert!(shards.iter().all(|p| p.len() == 50));
        assert!(shards.iter().all(|p| classes_of(p, &labels).len() <= 2));
        let iid = Partition::Iid.assign(&labels, 10, 5, 1).unwrap();
        assert!(
            iid.iter()
                .all(|p| p.len() == 200 && classes_of(p, &labels).len() == 10)
        );
        // Skewed Dirichlet: most clients miss some class.
        let skewed = Partition::Dirichlet(0.1)
            .assign(&labels, 10, 10, 1)
            .unwrap();
        assert!(
            skewed
                .iter()
                .filter(|p| classes_of(p, &labels).len() < 10)
                .count()
                >= 5
        );
    }

    #[test]
    fn bad_specs_and_sizes_are_refused() {
        for bad in [
            "",
            "iid:2",
            "shards:0",
            "shards:x",
            "dirichlet:0",
            "dirichlet:nan",
            "k",
        ] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
        assert_eq!(
            Partition::Iid.assign(&labels(10), 10, 0, 1),
            Err(PartitionError::Clients(0))
        );
        assert!(Partition::Shards(2).assign(&labels(10), 10, 6, 1).is_err());
        assert_eq!(
            Partition::Iid.assign(&labels(10), 5, 2, 1),
            Err(PartitionError::Label {
                label: 7,
                classes: 5
            })
        );
        assert_eq!(
            "3/100".parse::<ClientSlice>(),
            Ok(ClientSlice { index: 3, of: 100 })
        );
        for bad in ["100/100", "3", "-1/4", "1/0", "1/1000000"] {
            assert!(bad.parse::<ClientSlice>().is_err(), "{bad}");
        }
    }
}
