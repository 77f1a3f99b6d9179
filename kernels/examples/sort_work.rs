//! A fixed amount of sorting work, for counting instructions under qemu
//! (`cargo xtask bench sort-insns`): `sort_work <none|tandem|std> <n>`.
//!
//! Generates `n` pseudo-random f32, sorts them with the chosen method (`none` skips the
//! sort, to measure the set-up to subtract) and prints a checksum so nothing is elided.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(method), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: sort_work <none|tandem|std> <n>");
        return ExitCode::from(2);
    };
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut data: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as i32) as f32 * 1e-6
        })
        .collect();
    match method.as_str() {
        "none" => {}
        "tandem" => tandem_kernels::sort_f32(&mut data),
        "std" => data.sort_unstable_by(f32::total_cmp),
        other => {
            eprintln!("unknown method '{other}' (none, tandem, std)");
            return ExitCode::from(2);
        }
    }
    let checksum = data.iter().enumerate().fold(0u64, |acc, (i, v)| {
        acc.wrapping_mul(31)
            .wrapping_add(v.to_bits() as u64 ^ i as u64)
    });
    println!("{checksum:016x}");
    ExitCode::SUCCESS
}
