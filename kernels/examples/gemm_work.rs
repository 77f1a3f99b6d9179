//! A fixed amount of low-rank kernel work, for counting instructions under qemu
//! (`cargo xtask bench lowrank-insns`):
//! `gemm_work <none|xq|xq-scalar|xtp|xtp-scalar> <n> <d> <r>`.
//!
//! Generates a pseudo-random `n x d` matrix X and the right-hand factor, runs the chosen
//! product once (`none` skips it, to measure the set-up to subtract) and prints a
//! checksum so nothing is elided. `xq` is `X (n x d) * Q (d x r)`, `xtp` is
//! `X^T * P (n x r)`; the `-scalar` forms run the portable scalar kernel.

use std::process::ExitCode;
use tandem_kernels::linalg;

const USAGE: &str = "usage: gemm_work <none|xq|xq-scalar|xtp|xtp-scalar> <n> <d> <r>";

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
    let x = data(n * d, 1);
    let q = data(d * r, 2);
    let p = data(n * r, 3);
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
