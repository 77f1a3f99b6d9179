//! Coordinate-wise robust statistics over a stack of equal-length vectors: the median and
//! trimmed-mean aggregators of federated learning.
//!
//! Values are ordered by [`f32::total_cmp`]; callers validate updates (finite values)
//! before aggregating, so NaN here only sorts to an end instead of poisoning a column.

use crate::KernelError;

/// Columns gathered per block: rows are read contiguously, a block of columns at a time.
const COLUMNS_PER_BLOCK: usize = 256;

/// Checks that `rows` is non-empty with equal lengths; returns that length.
fn check_rows(rows: &[&[f32]]) -> Result<usize, KernelError> {
    let first = rows
        .first()
        .ok_or(KernelError::Empty("no vectors to aggregate"))?;
    let d = first.len();
    for row in rows {
        KernelError::check_len("vector", row.len(), d)?;
    }
    Ok(d)
}

/// Runs `reduce` on every column of `rows` (the column's values in row order, which
/// `reduce` may reorder) and collects the results.
fn by_column(rows: &[&[f32]], d: usize, mut reduce: impl FnMut(&mut [f32]) -> f32) -> Vec<f32> {
    let m = rows.len();
    let mut out = Vec::with_capacity(d);
    let mut block = vec![0.0f32; COLUMNS_PER_BLOCK * m];
    for start in (0..d).step_by(COLUMNS_PER_BLOCK) {
        let width = COLUMNS_PER_BLOCK.min(d - start);
        // Transpose the block: column c occupies block[c*m .. c*m + m].
        for (r, row) in rows.iter().enumerate() {
            for (c, &v) in row[start..start + width].iter().enumerate() {
                block[c * m + r] = v;
            }
        }
        for column in block[..width * m].chunks_exact_mut(m) {
            out.push(reduce(column));
        }
    }
    out
}

/// The coordinate-wise median of `rows`: for each position, the middle value, or the
/// mean of the two middle values when there is an even number of rows.
///
/// Errors if `rows` is empty or the rows differ in length.
pub fn median(rows: &[&[f32]]) -> Result<Vec<f32>, KernelError> {
    let d = check_rows(rows)?;
    let m = rows.len();
    Ok(by_column(rows, d, |column| {
        let (_, &mut upper, _) = column.select_nth_unstable_by(m / 2, f32::total_cmp);
        if m % 2 == 1 {
            upper
        } else {
            // The largest of the lower half is the other middle value.
            let lower = column[..m / 2]
                .iter()
                .copied()
                .max_by(f32::total_cmp)
                .unwrap_or(upper);
            (lower + upper) / 2.0
        }
    }))
}

/// The coordinate-wise `beta`-trimmed mean of `rows`: for each position, drop the
/// `floor(beta * m)` smallest and largest of the `m` values and average the rest.
///
/// Errors if `rows` is empty, the rows differ in length, or `beta` is not in
/// `[0, 0.5)`.
pub fn trimmed_mean(rows: &[&[f32]], beta: f32) -> Result<Vec<f32>, KernelError> {
    let d = check_rows(rows)?;
    if !(0.0..0.5).contains(&beta) {
        return Err(KernelError::OutOfRange {
            name: "beta",
            value: beta.to_string(),
            range: "[0, 0.5)",
        });
    }
    let m = rows.len();
    let trim = (beta as f64 * m as f64).floor() as usize;
    // beta < 0.5 keeps at least one value: m - 2 * floor(beta * m) >= 1.
    let kept = m - 2 * trim;
    Ok(by_column(rows, d, |column| {
        if trim > 0 {
            column.select_nth_unstable_by(trim, f32::total_cmp);
            column[trim..].select_nth_unstable_by(kept - 1, f32::total_cmp);
        }
        let sum: f64 = column[trim..trim + kept]
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        (sum / kept as f64) as f32
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oracle(rows: &[&[f32]], reduce: impl Fn(&mut Vec<f32>) -> f32) -> Vec<f32> {
        (0..rows[0].len())
            .map(|j| {
                let mut col: Vec<f32> = rows.iter().map(|r| r[j]).collect();
                col.sort_by(f32::total_cmp);
                reduce(&mut col)
            })
            .collect()
    }

    fn stack(m: usize, d: usize, seed: u32) -> Vec<Vec<f32>> {
        (0..m)
            .map(|i| {
                (0..d)
                    .map(|j| (((i * 7919 + j * 104_729 + seed as usize) % 1009) as f32) - 500.0)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn median_matches_sorting_each_column() {
        for (m, d) in [(1, 5), (2, 7), (5, 300), (10, 600), (11, 257)] {
            let rows = stack(m, d, 3);
            let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
            let want = oracle(&refs, |c| {
                let n = c.len();
                if n % 2 == 1 {
                    c[n / 2]
                } else {
                    (c[n / 2 - 1] + c[n / 2]) / 2.0
                }
            });
            assert_eq!(median(&refs).unwrap(), want, "m={m} d={d}");
        }
    }

    #[test]
    fn trimmed_mean_matches_sorting_each_column() {
        for (m, d, beta) in [
            (1, 4, 0.0),
            (5, 300, 0.2),
            (10, 600, 0.1),
            (10, 33, 0.49),
            (7, 9, 0.3),
        ] {
            let rows = stack(m, d, 11);
            let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
            let trim = (beta as f64 * m as f64).floor() as usize;
            let want = oracle(&refs, |c| {
                let kept = &c[trim..c.len() - trim];
                (kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64) as f32
            });
            assert_eq!(
                trimmed_mean(&refs, beta).unwrap(),
                want,
                "m={m} d={d} beta={beta}"
            );
        }
    }

    #[test]
    fn outliers_do_not_move_the_median_or_trimmed_mean() {
        let honest = [1.0f32, 1.1, 0.9, 1.0, 1.05];
        let attack = [1e30f32; 5];
        let rows: Vec<&[f32]> = vec![&honest, &honest, &honest, &attack];
        let med = median(&rows).unwrap();
        assert!(med.iter().all(|&v| v < 2.0), "{med:?}");
        let tm = trimmed_mean(&rows, 0.25).unwrap();
        assert!(
            tm.iter().zip(honest).all(|(&t, h)| (t - h).abs() < 1e-6),
            "{tm:?}"
        );
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert_eq!(
            median(&[]),
            Err(KernelError::Empty("no vectors to aggregate"))
        );
        let a = [1.0f32, 2.0];
        let b = [1.0f32];
        assert!(matches!(
            median(&[&a, &b]),
            Err(KernelError::LengthMismatch { .. })
        ));
        assert!(matches!(
            trimmed_mean(&[&a], 0.5),
            Err(KernelError::OutOfRange { .. })
        ));
        assert!(matches!(
            trimmed_mean(&[&a], f32::NAN),
            Err(KernelError::OutOfRange { .. })
        ));
    }
}
