//! The cloud's cache of a frozen bottom's codes (after EcoFed): a frozen bottom sends the
//! same rows for a review every epoch, so the cloud keeps what it decoded the first time,
//! keyed by the review's training-set id, and later batches of those reviews carry ids
//! only. Bounded: rows that would pass the budget are not kept, and the device only
//! sends ids the cloud said it kept.

use std::collections::HashMap;

/// One device's kept rows.
#[derive(Debug, Default)]
pub struct CodeCache {
    rows: HashMap<u32, Vec<f32>>,
    /// f32 values held.
    values: usize,
    /// The most f32 values it may hold.
    budget: usize,
}

impl CodeCache {
    /// A cache of at most `budget_bytes` of rows (0: keeps nothing).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes / 4,
            ..Self::default()
        }
    }

    /// Keeps each sequence's rows of `packed` (the batch's real tokens, `width` values
    /// each, sequence after sequence) under its review id. Returns whether all of them
    /// are kept; nothing new is kept when they would pass the budget or the layout does
    /// not add up.
    pub fn keep(
        &mut self,
        reviews: &[u32],
        seq_lens: &[usize],
        packed: &[f32],
        width: usize,
    ) -> bool {
        let tokens: usize = seq_lens.iter().sum();
        if reviews.len() != seq_lens.len() || tokens * width != packed.len() {
            return false;
        }
        let new: usize = reviews
            .iter()
            .zip(seq_lens)
            .filter(|(id, _)| !self.rows.contains_key(id))
            .map(|(_, len)| len * width)
            .sum();
        if self.values + new > self.budget {
            return false;
        }
        let mut at = 0;
        for (&id, &len) in reviews.iter().zip(seq_lens) {
            let rows = &packed[at..at + len * width];
            at += len * width;
            self.rows.entry(id).or_insert_with(|| {
                self.values += rows.len();
                rows.to_vec()
            });
        }
        true
    }

    /// The packed rows of `reviews`, each checked against its sequence length. The error
    /// is one line for the device's operator.
    pub fn rows(
        &self,
        reviews: &[u32],
        seq_lens: &[usize],
        width: usize,
    ) -> Result<Vec<f32>, String> {
        if reviews.len() != seq_lens.len() {
            return Err(format!(
                "{} review ids for {} sequences",
                reviews.len(),
                seq_lens.len()
            ));
        }
        let mut packed = Vec::with_capacity(seq_lens.iter().sum::<usize>() * width);
        for (id, &len) in reviews.iter().zip(seq_lens) {
            let rows = self
                .rows
                .get(id)
                .ok_or_else(|| format!("review {id} is not in this cloud's code cache"))?;
            if rows.len() != len * width {
                return Err(format!(
                    "review {id} was kept with {} tokens, sent with {len}",
                    rows.len() / width.max(1)
                ));
            }
            packed.extend_from_slice(rows);
        }
        Ok(packed)
    }

    /// Bytes of rows held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.values * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_rows_by_review_and_gives_them_back_within_its_budget() {
        // Two sequences of 2 and 1 tokens, width 2.
        let packed = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut cache = CodeCache::new(6 * 4);
        assert!(cache.keep(&[10, 11], &[2, 1], &packed, 2));
        assert_eq!(cache.bytes(), 24);
        // In another order and batch: the same rows.
        assert_eq!(
            cache.rows(&[11, 10], &[1, 2], 2).unwrap(),
            [5.0, 6.0, 1.0, 2.0, 3.0, 4.0]
        );
        // Kept again: nothing new, still within the budget.
        assert!(cache.keep(&[10], &[2], &packed[..4], 2));
        // A new review past the budget is not kept, and asking for it is an error.
        assert!(!cache.keep(&[12], &[1], &[7.0, 8.0], 2));
        assert!(
            cache
                .rows(&[12], &[1], 2)
                .unwrap_err()
                .contains("review 12")
        );
        // A length that does not match what was kept, a layout that does not add up.
        assert!(cache.rows(&[10], &[1], 2).unwrap_err().contains("2 tokens"));
        assert!(!cache.keep(&[13], &[2], &[1.0], 2));
        assert!(cache.rows(&[10, 11], &[2], 2).is_err());
        assert!(!CodeCache::new(0).keep(&[1], &[1], &[1.0, 2.0], 2));
    }
}
