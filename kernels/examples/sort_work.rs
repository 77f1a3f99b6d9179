//! A fixed amount of sorting work, for counting instructions under qemu
//! (`cargo xtask bench sort-insns`): `sort_work <method> <n>`, the method one of `none`,
//! `tandem`, `std`, `std-keys`, `tandem-u32`, `std-u32`, `tandem-u32-uniform`,
//! `std-u32-uniform`, `pairs`, `pairs-std`.
//!
//! Generates `n` pseudo-random f32, sorts them with the chosen method (`none` skips the
//! sort, to measure the set-up to subtract) and prints a checksum so nothing is elided.
//! `std-keys` sorts the f32 as std would sort tandem's own integer keys (mapped in
//! place, `sort_unstable`, mapped back); the `-u32` methods sort the values' bits as u32
//! (both copy them to a u32 vector and back: the same few instructions a key on each);
//! the `-u32-uniform` methods sort uniform random u32 instead (generated in both).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(method), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!(
            "usage: sort_work <none|tandem|std|std-keys|tandem-u32|std-u32|tandem-u32-uniform|std-u32-uniform|pairs|pairs-std> <n>"
        );
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
        "std-keys" | "tandem-u32" | "std-u32" | "tandem-u32-uniform" | "std-u32-uniform" => {
            let mut keys: Vec<u32> = data.iter().map(|f| f.to_bits()).collect();
            if method.ends_with("-uniform") {
                // Uniform u32 keys instead of the floats' bit patterns (the x86 bench's
                // u32 input), from the same generator, on both sides.
                for k in keys.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *k = x as u32;
                }
            }
            match method.as_str() {
                "std-keys" => {
                    // f32 bits to u32 keys in total_cmp order, and back.
                    for k in keys.iter_mut() {
                        *k = if *k >> 31 == 1 { !*k } else { *k ^ 0x8000_0000 };
                    }
                    keys.sort_unstable();
                    for k in keys.iter_mut() {
                        *k = if *k >> 31 == 1 { *k ^ 0x8000_0000 } else { !*k };
                    }
                }
                "tandem-u32" | "tandem-u32-uniform" => tandem_kernels::sort_u32(&mut keys),
                _ => keys.sort_unstable(),
            }
            for (d, k) in data.iter_mut().zip(keys) {
                *d = f32::from_bits(k);
            }
        }
        "pairs" => {
            let mut idx: Vec<u32> = (0..n as u32).collect();
            if let Err(e) = tandem_kernels::sort_pairs_f32(&mut data, &mut idx) {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        "pairs-std" => {
            let mut pairs: Vec<(f32, u32)> = data.iter().copied().zip(0..n as u32).collect();
            pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (d, (k, _)) in data.iter_mut().zip(pairs) {
                *d = k;
            }
        }
        other => {
            eprintln!(
                "unknown method '{other}' (none, tandem, std, std-keys, tandem-u32, std-u32, tandem-u32-uniform, std-u32-uniform, pairs, pairs-std)"
            );
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
