//! LowRank encode (PowerSGD subspace iteration: `P = H Q; orth(P); Q = H^T P`, twice,
//! rank 8) on tandem's kernels vs the same algorithm with its two products done by
//! `gemm` 0.19, faer's matmul engine (single-threaded, with its AVX2/AVX-512 kernels),
//! in one run. Both use tandem's CholeskyQR2, so the comparison isolates the products.
//! Also: the passes over H as a fraction of the machine's streaming read bandwidth, and
//! int8/f16 quantise+dequantise throughput vs a plain scalar loop.
//!
//! `cargo xtask bench lowrank` (or `cargo bench -p tandem-kernels --bench lowrank`).
//! Last line: `lowrank_2048x384_r8_vs_faer: X` (gemm time / tandem time; > 1: faster).

use std::hint::black_box;
use std::time::{Duration, Instant};
use tandem_kernels::linalg::{matmul_xq, matmul_xtp, orthonormalize};
use tandem_kernels::quant::{self, Rounding};

const RANK: usize = 8;
const ITERS: usize = 2;

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// `dst (m x n) = lhs * rhs` with gemm, strides given as (row, column).
#[allow(clippy::too_many_arguments)]
fn gemm_mul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: &[f32],
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: &[f32],
) {
    assert!(dst.len() >= m * n && rhs.len() >= k * n && lhs.len() >= m * k);
    // SAFETY: dst is m x n row-major (row stride n); lhs is m x k with the given strides
    // inside `lhs` (checked by the callers' shapes: H is n x d row-major, read as itself
    // or transposed); rhs is k x n row-major. All pointers stay within their slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn encode_tandem(h: &[f32], n: usize, d: usize, q0: &[f32]) -> Vec<f32> {
    let mut q = q0.to_vec();
    let mut p = vec![0.0; n * RANK];
    for it in 0..ITERS {
        matmul_xq(h, n, d, &q, RANK, &mut p).unwrap();
        orthonormalize(&mut p, n, RANK).unwrap();
        matmul_xtp(h, n, d, &p, RANK, &mut q).unwrap();
        if it + 1 < ITERS {
            orthonormalize(&mut q, d, RANK).unwrap();
        }
    }
    q
}

fn encode_gemm(h: &[f32], n: usize, d: usize, q0: &[f32]) -> Vec<f32> {
    let mut q = q0.to_vec();
    let mut p = vec![0.0; n * RANK];
    for it in 0..ITERS {
        gemm_mul(n, RANK, d, &mut p, h, d as isize, 1, &q);
        orthonormalize(&mut p, n, RANK).unwrap();
        // H^T: element (j, i) of H^T is h[i * d + j]: row stride 1, column stride d.
        gemm_mul(d, RANK, n, &mut q, h, 1, d as isize, &p);
        if it + 1 < ITERS {
            orthonormalize(&mut q, d, RANK).unwrap();
        }
    }
    q
}

fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort_unstable();
    t[runs / 2]
}

/// Streaming read bandwidth: summing a 512 MiB buffer of u64 (4 accumulators).
fn read_bandwidth() -> f64 {
    let buf: Vec<u64> = (0..(64u64 << 20)).collect();
    let t = median_time(5, || {
        let mut acc = [0u64; 4];
        for c in buf.chunks_exact(4) {
            for l in 0..4 {
                acc[l] = acc[l].wrapping_add(c[l]);
            }
        }
        black_box(acc);
    });
    (buf.len() * 8) as f64 / t.as_secs_f64()
}

fn main() {
    let bandwidth = read_bandwidth();
    println!("streaming read bandwidth: {:.1} GB/s", bandwidth / 1e9);
    let mut headline = 0.0;
    for (n, d, runs) in [(2048, 384, 41), (4096, 4096, 7)] {
        let h = data(n * d, 1);
        let q0 = data(d * RANK, 2);
        let a = encode_tandem(&h, n, d, &q0);
        let b = encode_gemm(&h, n, d, &q0);
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        let scale = b.iter().map(|x| x.abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-3 * scale, "results differ: {diff} vs {scale}");
        // Alternate to share any frequency drift.
        let mut tt = Vec::new();
        let mut tg = Vec::new();
        for _ in 0..3 {
            tt.push(median_time(runs, || {
                black_box(encode_tandem(black_box(&h), n, d, &q0));
            }));
            tg.push(median_time(runs, || {
                black_box(encode_gemm(black_box(&h), n, d, &q0));
            }));
        }
        let (t, g) = (*tt.iter().min().unwrap(), *tg.iter().min().unwrap());
        let passes = 2 * ITERS; // H Q and H^T P per iteration
        let achieved = (passes * n * d * 4) as f64 / t.as_secs_f64();
        println!(
            "lowrank {n}x{d} r{RANK} {ITERS} iters: tandem {:.3} ms, gemm {:.3} ms, ratio {:.2}; \
             {passes} passes over H at {:.1} GB/s = {:.0}% of streaming read",
            t.as_secs_f64() * 1e3,
            g.as_secs_f64() * 1e3,
            g.as_secs_f64() / t.as_secs_f64(),
            achieved / 1e9,
            100.0 * achieved / bandwidth
        );
        if n == 2048 {
            headline = g.as_secs_f64() / t.as_secs_f64();
        }
    }

    // Quantisation throughput vs plain scalar loops, 1M values.
    let x = data(1 << 20, 3);
    let mut codes = vec![0i8; x.len()];
    let mut scales = vec![0.0; quant::block_count(x.len(), 64)];
    let mut back = vec![0.0; x.len()];
    let quantise = median_time(21, || {
        quant::quantize_i8(
            black_box(&x),
            64,
            Rounding::Nearest,
            &mut codes,
            &mut scales,
        )
        .unwrap();
        black_box(&codes);
    });
    let dequantise = median_time(21, || {
        quant::dequantize_i8(black_box(&codes), &scales, 64, &mut back).unwrap();
        black_box(&back);
    });
    // The same jobs as plain loops, as one would write them: per block absmax, scale,
    // round to nearest even, clamp; compiled as is (black_box only on whole buffers).
    let plain_quantise = median_time(21, || {
        for ((xb, cb), s) in black_box(&x)
            .chunks(64)
            .zip(codes.chunks_mut(64))
            .zip(scales.iter_mut())
        {
            let m = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            *s = m / 127.0;
            let inv = if m > 0.0 { 127.0 / m } else { 0.0 };
            for (c, v) in cb.iter_mut().zip(xb) {
                *c = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
        }
        black_box(&codes);
    });
    let plain_dequantise = median_time(21, || {
        for ((cb, ob), s) in black_box(&codes)
            .chunks(64)
            .zip(back.chunks_mut(64))
            .zip(&scales)
        {
            for (o, c) in ob.iter_mut().zip(cb) {
                *o = f32::from(*c) * s;
            }
        }
        black_box(&back);
    });
    for (what, ours, plain) in [
        ("quantise", quantise, plain_quantise),
        ("dequantise", dequantise, plain_dequantise),
    ] {
        println!(
            "int8 {what} 1M (blocks of 64): {:.3} ms ({:.1} GB/s of f32) vs plain loop {:.3} ms ({:.2}x)",
            ours.as_secs_f64() * 1e3,
            (x.len() * 4) as f64 / ours.as_secs_f64() / 1e9,
            plain.as_secs_f64() * 1e3,
            plain.as_secs_f64() / ours.as_secs_f64()
        );
    }
    let mut half = vec![0u16; x.len()];
    let f16 = median_time(21, || {
        quant::f32_to_f16(&x, &mut half).unwrap();
        quant::f16_to_f32(&half, &mut back).unwrap();
        black_box(&back);
    });
    println!(
        "f16 encode+decode 1M: {:.3} ms ({:.2} GB/s of f32)",
        f16.as_secs_f64() * 1e3,
        (x.len() * 4) as f64 / f16.as_secs_f64() / 1e9
    );
    println!("lowrank_2048x384_r8_vs_faer: {headline:.2}");
}
