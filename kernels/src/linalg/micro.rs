//! Register- and cache-blocked tall-skinny GEMM, generic over [`FmaLanes`].
//!
//! Both products keep one `MR x (NV*W)` register tile of accumulators and share the
//! inner step: four scalars `x[0..4]` times NV vectors of `B`,
//! `acc[m][v] += B[v] * x[lane]` (`fmla v.4s, b.4s, x.s[lane]` on NEON).
//! - `X * Q`: the tile is MR rows of the output; each row's quad holds 4 consecutive
//!   elements of its X row, 4 steps of the reduction.
//! - `X^T * P`: the tile is MR rows of the output (MR columns of X); the MR/4 quads of
//!   one X row are one reduction step.
//!
//! The right-hand factor is packed per column block so that each step loads NV
//! contiguous vectors; the reduction is split into cache blocks (`KC` of Q's rows, `IC`
//! of P's rows) whose packed panel stays in L1. Whole tiles are read and written in
//! place; only the matrix's ragged edges go through a padded copy.

use super::lanes::FmaLanes;

/// Rows of Q per cache block of `X * Q` (the packed panel is KC x NR floats: 16 KiB at
/// NR = 8, inside every target core's L1).
const KC: usize = 512;
/// Rows of X and P per cache block of `X^T * P`.
const IC: usize = 256;
/// The widest register tile any backend uses, in floats.
const NR_MAX: usize = 16;
/// The most rows any backend's register tile has.
const MR_MAX: usize = 8;

/// Columns of one register tile.
pub(crate) fn nr<L: FmaLanes>() -> usize {
    L::W * L::NV
}

/// Packs `b` (rows x cols, row-major) into column blocks of `nr` columns, each stored
/// row by row and zero-padded: block `jb` is `rows * nr` floats.
pub(crate) fn pack(b: &[f32], rows: usize, cols: usize, nr: usize) -> Vec<f32> {
    pack_rows(rows, cols, nr, |i, j0, dst| {
        dst.copy_from_slice(&b[i * cols + j0..][..dst.len()]);
    })
}

/// [`pack`] of a matrix given by `fill(i, j0, dst)`, which writes elements
/// `(i, j0..j0 + dst.len())` into `dst` (for factors read transposed or dequantised
/// while packing).
pub(crate) fn pack_rows(
    rows: usize,
    cols: usize,
    nr: usize,
    fill: impl Fn(usize, usize, &mut [f32]),
) -> Vec<f32> {
    let blocks = cols.div_ceil(nr);
    let mut packed = vec![0.0; blocks * rows * nr];
    for jb in 0..blocks {
        let width = nr.min(cols - jb * nr);
        let block = &mut packed[jb * rows * nr..(jb + 1) * rows * nr];
        for (i, dst) in block.chunks_exact_mut(nr).enumerate() {
            fill(i, jb * nr, &mut dst[..width]);
        }
    }
    packed
}

/// A tile of accumulators: `L::MR` rows of `L::NV` vectors are used.
type Tile<L> = [[<L as FmaLanes>::V; 4]; MR_MAX];

/// Where a register tile lives in a row-major output with `stride` columns: rows
/// `row0..row0 + rows`, columns `col0..col0 + width`.
#[derive(Clone, Copy)]
struct TileAt {
    row0: usize,
    rows: usize,
    col0: usize,
    width: usize,
    stride: usize,
}

impl TileAt {
    /// Whether the tile is whole (not cut by the matrix's last rows or columns).
    fn is_full<L: FmaLanes>(self) -> bool {
        self.rows == L::MR && self.width == nr::<L>()
    }

    /// Offset of row `m` of the tile in the output.
    fn row(self, m: usize) -> usize {
        (self.row0 + m) * self.stride + self.col0
    }
}

/// Loads the tile's accumulators from `out` (partial tiles through a zero-padded copy).
#[inline(always)]
fn tile_read<L: FmaLanes>(l: L, out: &[f32], at: TileAt) -> Tile<L> {
    let mut acc = [[l.zero(); 4]; MR_MAX];
    if at.is_full::<L>() {
        for (m, row) in acc.iter_mut().enumerate().take(L::MR) {
            for (v, lane) in row.iter_mut().enumerate().take(L::NV) {
                *lane = l.load(&out[at.row(m) + v * L::W..]);
            }
        }
        return acc;
    }
    let mut buf = [0.0f32; MR_MAX * NR_MAX];
    for m in 0..at.rows {
        buf[m * NR_MAX..][..at.width].copy_from_slice(&out[at.row(m)..][..at.width]);
    }
    for (m, row) in acc.iter_mut().enumerate().take(L::MR) {
        for (v, lane) in row.iter_mut().enumerate().take(L::NV) {
            *lane = l.load(&buf[m * NR_MAX + v * L::W..]);
        }
    }
    acc
}

/// Stores the tile's accumulators to `out` (partial tiles through a copy).
#[inline(always)]
fn tile_write<L: FmaLanes>(l: L, acc: &Tile<L>, out: &mut [f32], at: TileAt) {
    if at.is_full::<L>() {
        for (m, row) in acc.iter().enumerate().take(L::MR) {
            for (v, lane) in row.iter().enumerate().take(L::NV) {
                l.store(*lane, &mut out[at.row(m) + v * L::W..]);
            }
        }
        return;
    }
    let mut buf = [0.0f32; MR_MAX * NR_MAX];
    for (m, row) in acc.iter().enumerate().take(L::MR) {
        for (v, lane) in row.iter().enumerate().take(L::NV) {
            l.store(*lane, &mut buf[m * NR_MAX + v * L::W..]);
        }
    }
    for m in 0..at.rows {
        out[at.row(m)..][..at.width].copy_from_slice(&buf[m * NR_MAX..][..at.width]);
    }
}

/// One reduction step of `X * Q` for all tile rows: `acc[m][v] += b[v] * x[m][LANE]`.
#[inline(always)]
fn step_rows<L: FmaLanes, const LANE: i32>(
    l: L,
    acc: &mut Tile<L>,
    b: &[L::V; 4],
    x: &[L::X4; MR_MAX],
) {
    for m in 0..L::MR {
        for v in 0..L::NV {
            acc[m][v] = l.fma_lane::<LANE>(acc[m][v], b[v], x[m]);
        }
    }
}

/// One reduction step of `X^T * P` for tile rows `4 * QUAD..4 * QUAD + 4`:
/// `acc[4 QUAD + j][v] += b[v] * x[j]`.
#[inline(always)]
fn step_quad<L: FmaLanes>(l: L, acc: &mut Tile<L>, quad: usize, b: &[L::V; 4], x: L::X4) {
    for v in 0..L::NV {
        acc[4 * quad][v] = l.fma_lane::<0>(acc[4 * quad][v], b[v], x);
        acc[4 * quad + 1][v] = l.fma_lane::<1>(acc[4 * quad + 1][v], b[v], x);
        acc[4 * quad + 2][v] = l.fma_lane::<2>(acc[4 * quad + 2][v], b[v], x);
        acc[4 * quad + 3][v] = l.fma_lane::<3>(acc[4 * quad + 3][v], b[v], x);
    }
}

#[inline(always)]
fn load_b<L: FmaLanes>(l: L, row: &[f32]) -> [L::V; 4] {
    let mut b = [l.zero(); 4];
    for (v, lane) in b.iter_mut().enumerate().take(L::NV) {
        *lane = l.load(&row[v * L::W..]);
    }
    b
}

/// Four elements `row[k..k + 4]`, zero-padded past `row`'s end.
#[inline(always)]
fn quad(row: &[f32], k: usize) -> [f32; 4] {
    let mut q = [0.0; 4];
    if k < row.len() {
        let have = (row.len() - k).min(4);
        q[..have].copy_from_slice(&row[k..k + have]);
    }
    q
}

/// `out (n x r) = x (n x d) * q (d x r)`, all row-major. Lengths are checked by the
/// caller.
#[inline(always)]
pub(crate) fn xq<L: FmaLanes>(
    l: L,
    x: &[f32],
    n: usize,
    d: usize,
    q: &[f32],
    r: usize,
    out: &mut [f32],
) {
    xq_packed(l, x, n, d, &pack(q, d, r, nr::<L>()), r, out);
}

/// [`xq`] with Q already packed by [`pack`] or [`pack_rows`] in column blocks of
/// `L::W * L::NV`.
#[inline(always)]
pub(crate) fn xq_packed<L: FmaLanes>(
    l: L,
    x: &[f32],
    n: usize,
    d: usize,
    packed: &[f32],
    r: usize,
    out: &mut [f32],
) {
    if d == 0 {
        out.fill(0.0);
        return;
    }
    let nr = nr::<L>();
    let blocks = r.div_ceil(nr);
    let zero4 = l.load_x4(&[0.0; 4]);
    for k0 in (0..d).step_by(KC) {
        let k1 = (k0 + KC).min(d);
        let full = (k1 - k0) / 4 * 4;
        for i0 in (0..n).step_by(L::MR) {
            let rows = (n - i0).min(L::MR);
            // Rows past n repeat the last row; their results are not stored.
            let mut xr: [&[f32]; MR_MAX] = [&[]; MR_MAX];
            for (m, row) in xr.iter_mut().enumerate().take(L::MR) {
                let i = i0 + m.min(rows - 1);
                *row = &x[i * d + k0..i * d + k1];
            }
            for jb in 0..blocks {
                let at = TileAt {
                    row0: i0,
                    rows,
                    col0: jb * nr,
                    width: nr.min(r - jb * nr),
                    stride: r,
                };
                let mut acc = if k0 == 0 {
                    [[l.zero(); 4]; MR_MAX]
                } else {
                    tile_read(l, out, at)
                };
                let panel = &packed[jb * d * nr + k0 * nr..jb * d * nr + k1 * nr];
                let mut x4 = [zero4; MR_MAX];
                for (k, steps) in panel[..full * nr].chunks_exact(4 * nr).enumerate() {
                    for m in 0..L::MR {
                        x4[m] = l.load_x4(&xr[m][4 * k..4 * k + 4]);
                    }
                    step_rows::<L, 0>(l, &mut acc, &load_b(l, &steps[..nr]), &x4);
                    step_rows::<L, 1>(l, &mut acc, &load_b(l, &steps[nr..2 * nr]), &x4);
                    step_rows::<L, 2>(l, &mut acc, &load_b(l, &steps[2 * nr..3 * nr]), &x4);
                    step_rows::<L, 3>(l, &mut acc, &load_b(l, &steps[3 * nr..]), &x4);
                }
                // The last 1..3 steps: x lanes past k1 are zero and their steps skipped.
                let tail = k1 - k0 - full;
                if tail > 0 {
                    for m in 0..L::MR {
                        x4[m] = l.load_x4(&quad(xr[m], full));
                    }
                    let b = |s: usize| load_b(l, &panel[(full + s) * nr..]);
                    step_rows::<L, 0>(l, &mut acc, &b(0), &x4);
                    if tail > 1 {
                        step_rows::<L, 1>(l, &mut acc, &b(1), &x4);
                    }
                    if tail > 2 {
                        step_rows::<L, 2>(l, &mut acc, &b(2), &x4);
                    }
                }
                tile_write(l, &acc, out, at);
            }
        }
    }
}

/// `out (d x r) = x^T * p` for `x` (n x d) and `p` (n x r), all row-major. Lengths are
/// checked by the caller.
///
/// The tile's rows are `L::MR` consecutive columns of X, read as `L::MR / 4` quads of
/// each X row; the reduction runs over X's rows in cache blocks of `IC`.
#[inline(always)]
pub(crate) fn xtp<L: FmaLanes>(
    l: L,
    x: &[f32],
    n: usize,
    d: usize,
    p: &[f32],
    r: usize,
    out: &mut [f32],
) {
    if n == 0 {
        out.fill(0.0);
        return;
    }
    let nr = nr::<L>();
    let packed = pack(p, n, r, nr);
    let blocks = r.div_ceil(nr);
    for i0 in (0..n).step_by(IC) {
        let i1 = (i0 + IC).min(n);
        for k0 in (0..d).step_by(L::MR) {
            let rows = (d - k0).min(L::MR);
            for jb in 0..blocks {
                let at = TileAt {
                    row0: k0,
                    rows,
                    col0: jb * nr,
                    width: nr.min(r - jb * nr),
                    stride: r,
                };
                let mut acc = if i0 == 0 {
                    [[l.zero(); 4]; MR_MAX]
                } else {
                    tile_read(l, out, at)
                };
                let panel = &packed[jb * n * nr..(jb + 1) * n * nr];
                let x_rows = x[i0 * d..i1 * d].chunks_exact(d);
                let p_rows = panel[i0 * nr..i1 * nr].chunks_exact(nr);
                if rows == L::MR {
                    for (row, p_row) in x_rows.zip(p_rows) {
                        let row = &row[k0..k0 + L::MR];
                        let b = load_b(l, p_row);
                        for qd in 0..L::MR / 4 {
                            step_quad(l, &mut acc, qd, &b, l.load_x4(&row[4 * qd..]));
                        }
                    }
                } else {
                    // The matrix's last columns: lanes past d are zero.
                    for (row, p_row) in x_rows.zip(p_rows) {
                        let b = load_b(l, p_row);
                        for qd in 0..L::MR / 4 {
                            let x4 = l.load_x4(&quad(row, k0 + 4 * qd));
                            step_quad(l, &mut acc, qd, &b, x4);
                        }
                    }
                }
                tile_write(l, &acc, out, at);
            }
        }
    }
}
