//! A fixed amount of low-rank kernel work, for counting instructions under qemu
//! (`cargo xtask bench lowrank-insns`):
//! `gemm_work <none|xq|xq-scalar|xtp|xtp-scalar|quant|quant-plain> <n> <d> <r>`.
//!
//! Generates a pseudo-random `n x d` matrix X and the right-hand factor, runs the chosen
//! product once (`none` skips it, to measure the set-up to subtract) and prints a
//! checksum so nothing is elided. `xq` is `X (n x d) * Q (d x r)`, `xtp` is
//! `X^T * P (n x r)`; the `-scalar` forms run the portable scalar kernel. `quant`
//! quantises X to int8 (blocks of 64, nearest) and back with tandem's kernels,
//! `quant-plain` does the same with a plain loop written here.

use std::process::ExitCode;
use tandem_kernels::linalg;

const USAGE: &str =
    "usage: gemm_work <none|xq|xq-scalar|xtp|xtp-scalar|quant|quant-plain> <n> <d> <r>";

/// int8 round trip of `x` in blocks of 64 with a plain loop: absmax, scale, round to
/// nearest even, clamp; then codes times scale. The same buffers as tandem's round trip
/// (codes, scales, output), each allocated once.
fn quant_plain(x: &[f32]) -> Vec<f32> {
    let mut codes = vec![0i8; x.len()];
    let mut scales = vec![0.0f32; x.len().div_ceil(64)];
    for ((xb, cb), scale) in x.chunks(64).zip(codes.chunks_mut(64)).zip(&mut scales) {
        let m = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = if m > 0.0 { 127.0 / m } else { 0.0 };
        for (c, v) in cb.iter_mut().zip(xb) {
            *c = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        *scale = m / 127.0;
    }
    let mut out = vec![0.0; x.len()];
    for ((ob, cb), scale) in out.chunks_mut(64).zip(codes.chunks(64)).zip(&scales) {
        for (o, &c) in ob.iter_mut().zip(cb) {
            *o = f32::from(c) * scale;
        }
    }
    out
}

/// The same round trip with tandem's kernels.
fn quant_tandem(x: &[f32]) -> Result<Vec<f32>, tandem_kernels::KernelError> {
    use tandem_kernels::quant::{Rounding, block_count, dequantize_i8, quantize_i8};
    let mut codes = vec![0i8; x.len()];
    let mut scales = vec![0.0; block_count(x.len(), 64)];
    quantize_i8(x, 64, Rounding::Nearest, &mut codes, &mut scales)?;
    let mut out = vec![0.0; x.len()];
    dequantize_i8(&codes, &scales, 64, &mut out)?;
    Ok(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dims: Vec<usize> = args[1.min(args.len())..]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let (Some(method), &[n, d, r]) = (args.first(), dims.as_slice()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let x = linalg::random_start(n * d, 1);
    let q = linalg::random_start(d * r, 2);
    let p = linalg::random_start(n * r, 3);
    let result = match method.as_str() {
        "none" => Ok(Vec::new()),
        "xq" | "xq-scalar" => {
            let mut out = vec![0.0; n * r];
            let run = if method == "xq" {
                linalg::matmul_xq
            } else {
                linalg::matmul_xq_scalar
            };
            run(&x, n, d, &q, r, &mut out).map(|()| out)
        }
        "xtp" | "xtp-scalar" => {
            let mut out = vec![0.0; d * r];
            let run = if method == "xtp" {
                linalg::matmul_xtp
            } else {
                linalg::matmul_xtp_scalar
            };
            run(&x, n, d, &p, r, &mut out).map(|()| out)
        }
        "quant" => quant_tandem(&x),
        "quant-plain" => Ok(quant_plain(&x)),
        other => {
            eprintln!("unknown method '{other}'; {USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(out) => {
            let checksum = out.iter().fold(0u64, |acc, v| {
                acc.wrapping_mul(31).wrapping_add(u64::from(v.to_bits()))
            });
            println!("{checksum:016x}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
