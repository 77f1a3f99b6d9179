//! Register- and cache-blocked tall-skinny GEMM, generic over [`FmaLanes`].
//!
//! Both products use one 4 x (NV*W) register tile of accumulators and the same inner
//! step: four scalars `x[0..4]` times NV vectors of `B`, `acc[m][v] += B[v] * x[m]`
//! (`fmla v.4s, b.4s, x.s[m]` on NEON).
//! - `X * Q`: the tile is 4 rows of the output; `x` is 4 consecutive elements of one X
//!   row (4 steps of the reduction), so each row's quad feeds 4 steps.
//! - `X^T * P`: the tile is 4 rows of the output (4 columns of X); `x` is those 4
//!   elements of one X row, one reduction step.
//!
//! The right-hand factor is packed per column block so that each step loads NV
//! contiguous vectors; the reduction is split into cache blocks (`KC` of Q's rows, `IC`
//! of P's rows) whose packed panel stays in L1.

use super::lanes::FmaLanes;

/// Rows of Q per cache block of `X * Q` (the packed panel is KC x NR floats).
const KC: usize = 256;
/// Rows of X and P per cache block of `X^T * P`.
const IC: usize = 256;
/// The largest tile width any backend uses (Scalar: 4, NEON/x86: 8).
const NR_MAX: usize = 16;

/// Columns of one register tile.
fn nr<L: FmaLanes>() -> usize {
    L::W * L::NV
}

/// Packs `b` (rows x cols, row-major) into column blocks of `nr` columns, each stored
/// row by row and zero-padded: block `jb` is `rows * nr` floats.
fn pack(b: &[f32], rows: usize, cols: usize, nr: usize) -> Vec<f32> {
    let blocks = cols.div_ceil(nr);
    let mut packed = vec![0.0; blocks * rows * nr];
    for jb in 0..blocks {
        let width = nr.min(cols - jb * nr);
        let block = &mut packed[jb * rows * nr..(jb + 1) * rows * nr];
        for (row, dst) in block.chunks_exact_mut(nr).enumerate() {
            dst[..width].copy_from_slice(&b[row * cols + jb * nr..][..width]);
        }
    }
    packed
}

/// A tile of accumulators: up to 4 vectors per row.
type Tile<L> = [[<L as FmaLanes>::V; 4]; 4];

/// Loads the tile from `buf` (4 rows of `nr` floats).
#[inline(always)]
fn tile_load<L: FmaLanes>(l: L, buf: &[f32; 4 * NR_MAX]) -> Tile<L> {
    let mut acc = [[l.zero(); 4]; 4];
    for (m, row) in acc.iter_mut().enumerate() {
        for (v, lane) in row.iter_mut().enumerate().take(L::NV) {
            *lane = l.load(&buf[m * NR_MAX + v * L::W..]);
        }
    }
    acc
}

#[inline(always)]
fn tile_store<L: FmaLanes>(l: L, acc: &Tile<L>, buf: &mut [f32; 4 * NR_MAX]) {
    for (m, row) in acc.iter().enumerate() {
        for (v, lane) in row.iter().enumerate().take(L::NV) {
            l.store(*lane, &mut buf[m * NR_MAX + v * L::W..]);
        }
    }
}

/// One reduction step for all 4 tile rows: `acc[m][v] += b[v] * x_m[LANE]`.
#[inline(always)]
fn step_rows<L: FmaLanes, const LANE: i32>(l: L, acc: &mut Tile<L>, b: &[L::V; 4], x: &[L::X4; 4]) {
    for m in 0..4 {
        for v in 0..L::NV {
            acc[m][v] = l.fma_lane::<LANE>(acc[m][v], b[v], x[m]);
        }
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
    let have = row.len().saturating_sub(k).min(4);
    q[..have].copy_from_slice(&row[k..k + have]);
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
    let nr = nr::<L>();
    let packed = pack(q, d, r, nr);
    let blocks = r.div_ceil(nr);
    let mut buf = [0.0f32; 4 * NR_MAX];
    for k0 in (0..d).step_by(KC) {
        let k1 = (k0 + KC).min(d);
        for i0 in (0..n).step_by(4) {
            let rows = (n - i0).min(4);
            // Rows past n repeat the last row; their results are not stored.
            let xr: [&[f32]; 4] = [0, 1, 2, 3].map(|m| &x[(i0 + m.min(rows - 1)) * d..][k0..k1]);
            for jb in 0..blocks {
                let width = nr.min(r - jb * nr);
                let panel = &packed[jb * d * nr + k0 * nr..jb * d * nr + k1 * nr];
                let mut acc = if k0 == 0 {
                    [[l.zero(); 4]; 4]
                } else {
                    for m in 0..rows {
                        buf[m * NR_MAX..m * NR_MAX + width]
                            .copy_from_slice(&out[(i0 + m) * r + jb * nr..][..width]);
                    }
                    tile_load(l, &buf)
                };
                let full = (k1 - k0) / 4 * 4;
                for (k, steps) in panel[..full * nr].chunks_exact(4 * nr).enumerate() {
                    let k = 4 * k;
                    let x4 = [0, 1, 2, 3]
                        .map(|m| l.load_x4(xr[m][k..k + 4].try_into().expect("4 elements")));
                    step_rows::<L, 0>(l, &mut acc, &load_b(l, &steps[..nr]), &x4);
                    step_rows::<L, 1>(l, &mut acc, &load_b(l, &steps[nr..2 * nr]), &x4);
                    step_rows::<L, 2>(l, &mut acc, &load_b(l, &steps[2 * nr..3 * nr]), &x4);
                    step_rows::<L, 3>(l, &mut acc, &load_b(l, &steps[3 * nr..]), &x4);
                }
                // The last 1..3 steps: x lanes past k1 are zero and their steps skipped.
                let tail = k1 - k0 - full;
                if tail > 0 {
                    let x4 = [0, 1, 2, 3].map(|m| l.load_x4(&quad(xr[m], full)));
                    let b = |s: usize| load_b(l, &panel[(full + s) * nr..]);
                    step_rows::<L, 0>(l, &mut acc, &b(0), &x4);
                    if tail > 1 {
                        step_rows::<L, 1>(l, &mut acc, &b(1), &x4);
                    }
                    if tail > 2 {
                        step_rows::<L, 2>(l, &mut acc, &b(2), &x4);
                    }
                }
                tile_store(l, &acc, &mut buf);
                for m in 0..rows {
                    out[(i0 + m) * r + jb * nr..][..width]
                        .copy_from_slice(&buf[m * NR_MAX..m * NR_MAX + width]);
                }
            }
        }
    }
    if d == 0 {
        out.fill(0.0);
    }
}

/// `out (d x r) = x^T * p` for `x` (n x d) and `p` (n x r), all row-major. Lengths are
/// checked by the caller.
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
    let nr = nr::<L>();
    let packed = pack(p, n, r, nr);
    let blocks = r.div_ceil(nr);
    let mut buf = [0.0f32; 4 * NR_MAX];
    out.fill(0.0);
    for i0 in (0..n).step_by(IC) {
        let i1 = (i0 + IC).min(n);
        for k0 in (0..d).step_by(4) {
            let rows = (d - k0).min(4);
            for jb in 0..blocks {
                let width = nr.min(r - jb * nr);
                let panel = &packed[jb * n * nr..(jb + 1) * n * nr];
                for m in 0..rows {
                    buf[m * NR_MAX..m * NR_MAX + width]
                        .copy_from_slice(&out[(k0 + m) * r + jb * nr..][..width]);
                }
                let mut acc = tile_load(l, &buf);
                for i in i0..i1 {
                    let row = &x[i * d..][..d];
                    let x4 = if rows == 4 {
                        l.load_x4(row[k0..k0 + 4].try_into().expect("4 elements"))
                    } else {
                        l.load_x4(&quad(row, k0))
                    };
                    let b = load_b(l, &panel[i * nr..]);
                    for v in 0..L::NV {
                        acc[0][v] = l.fma_lane::<0>(acc[0][v], b[v], x4);
                        acc[1][v] = l.fma_lane::<1>(acc[1][v], b[v], x4);
                        acc[2][v] = l.fma_lane::<2>(acc[2][v], b[v], x4);
                        acc[3][v] = l.fma_lane::<3>(acc[3][v], b[v], x4);
                    }
                }
                tile_store(l, &acc, &mut buf);
                for m in 0..rows {
                    out[(k0 + m) * r + jb * nr..][..width]
                        .copy_from_slice(&buf[m * NR_MAX..m * NR_MAX + width]);
                }
            }
        }
    }
}
