//! Sort throughput: tandem-kernels vs the standard library, measured in one run.
//!
//! `cargo xtask bench sort` (or `cargo bench -p tandem-kernels --bench sort`). For each
//! size it sorts the same random input with both sorts, alternating, several times, and
//! reports the median time per key and the speedup. f32 has two baselines:
//! `sort_unstable_by(f32::total_cmp)` (what a Rust user writes for floats), and the
//! like-for-like one, `sort_unstable` on the same order-preserving integer keys tandem
//! sorts (mapped in place before and back after, inside the timed window, as tandem does).
//! The last line is `sort_1M_u32: X f32_same_keys: Y` (speedups over std at 1M keys).
//!
//! Set `TANDEM_BENCH_QUICK=1` for a seconds-long smoke run (small sizes only).

use std::hint::black_box;
use std::time::{Duration, Instant};

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Median of `reps` timings of `sort` on fresh copies of `input`.
fn time_sort<T: Copy>(input: &[T], reps: usize, mut sort: impl FnMut(&mut [T])) -> Duration {
    let mut buf = input.to_vec();
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            buf.copy_from_slice(input);
            let start = Instant::now();
            sort(black_box(&mut buf));
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// The f32 bits as u32 keys in [`f32::total_cmp`] order, in place (and back with
/// [`from_order_keys`]): negative values inverted, positive ones with the sign bit set.
fn to_order_keys(bits: &mut [u32]) {
    for b in bits {
        *b = if *b >> 31 == 1 { !*b } else { *b ^ 0x8000_0000 };
    }
}

fn from_order_keys(keys: &mut [u32]) {
    for k in keys {
        *k = if *k >> 31 == 1 { *k ^ 0x8000_0000 } else { !*k };
    }
}

struct Row {
    what: String,
    n: usize,
    ours: Duration,
    std: Duration,
}

impl Row {
    fn speedup(&self) -> f64 {
        self.std.as_secs_f64() / self.ours.as_secs_f64()
    }
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{}M", n >> 20),
        n if n >= 1 << 10 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

/// top_k_abs (k = 1%) vs what a Rust user writes: pair values with their indices,
/// `select_nth_unstable_by` on |value|, sort the head.
fn top_k_table(quick: bool) {
    let n = if quick { 1_000_000 } else { 10_000_000 };
    let k = n / 100;
    let mut next = xorshift(42);
    let x: Vec<f32> = (0..n).map(|_| (next() as i32) as f32 * 1e-9).collect();
    let reps = 7;
    let times = |f: &mut dyn FnMut() -> usize| {
        let mut t: Vec<Duration> = (0..reps)
            .map(|_| {
                let start = Instant::now();
                black_box(f());
                start.elapsed()
            })
            .collect();
        t.sort_unstable();
        t[reps / 2]
    };
    let by_abs_desc = |p: &(u32, f32), q: &(u32, f32)| q.1.abs().total_cmp(&p.1.abs());
    let std = times(&mut || {
        let mut pairs: Vec<(u32, f32)> =
            x.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
        pairs.select_nth_unstable_by(k - 1, by_abs_desc);
        pairs[..k].sort_unstable_by(by_abs_desc);
        pairs.truncate(k);
        pairs.len()
    });
    let ours = times(&mut || {
        tandem_kernels::top_k_abs(&x, k)
            .map(|(i, _)| i.len())
            .unwrap_or(0)
    });
    println!(
        "top_k_abs n={n} k={k}: tandem {:.2} ms, select_nth_unstable_by + sort head {:.2} ms, speedup {:.2}x",
        ours.as_secs_f64() * 1e3,
        std.as_secs_f64() * 1e3,
        std.as_secs_f64() / ours.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::var_os("TANDEM_BENCH_QUICK").is_some();
    let sizes: &[usize] = if quick {
        &[1 << 10, 1 << 16]
    } else {
        &[1 << 10, 1 << 16, 1 << 20, 1 << 24]
    };
    let mut rows = Vec::new();
    for &n in sizes {
        // Enough repetitions for a stable median, fewer for the big sizes.
        let reps = if n >= 1 << 24 {
            5
        } else if n >= 1 << 20 {
            11
        } else {
            31
        };
        let mut next = xorshift(n as u64);
        let floats: Vec<f32> = (0..n).map(|_| (next() as i32) as f32 * 1e-6).collect();
        let ints: Vec<u32> = (0..n).map(|_| next() as u32).collect();
        // Interleave the two sorts per size so machine noise hits both alike.
        let std_f = time_sort(&floats, reps, |d| d.sort_unstable_by(f32::total_cmp));
        let ours_f = time_sort(&floats, reps, tandem_kernels::sort_f32);
        rows.push(Row {
            what: "f32".into(),
            n,
            ours: ours_f,
            std: std_f,
        });
        // The like-for-like f32 baseline: std sorting the same order-preserving keys.
        let float_bits: Vec<u32> = floats.iter().map(|f| f.to_bits()).collect();
        let mut check = float_bits.clone();
        to_order_keys(&mut check);
        check.sort_unstable();
        from_order_keys(&mut check);
        let mut sorted = floats.clone();
        tandem_kernels::sort_f32(&mut sorted);
        assert!(
            check.iter().zip(&sorted).all(|(k, f)| *k == f.to_bits()),
            "the integer-key baseline sorts in total_cmp order"
        );
        let std_keys = time_sort(&float_bits, reps, |d| {
            to_order_keys(d);
            d.sort_unstable();
            from_order_keys(d);
        });
        rows.push(Row {
            what: "f32-keys".into(),
            n,
            ours: ours_f,
            std: std_keys,
        });
        let std_u = time_sort(&ints, reps, |d| d.sort_unstable());
        let ours_u = time_sort(&ints, reps, tandem_kernels::sort_u32);
        rows.push(Row {
            what: "u32".into(),
            n,
            ours: ours_u,
            std: std_u,
        });
        // Pairs: (f32 key, u32 index) from two slices back into two slices. Baseline:
        // zip, `sort_unstable_by` on the key, unzip.
        let pairs: Vec<(f32, u32)> = floats.iter().copied().zip(0..n as u32).collect();
        let std_p = time_sort(&pairs, reps, |d| {
            let (mut keys, mut idx): (Vec<f32>, Vec<u32>) = d.iter().copied().unzip();
            let mut zipped: Vec<(f32, u32)> =
                keys.iter().copied().zip(idx.iter().copied()).collect();
            zipped.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            for ((k, i), z) in keys.iter_mut().zip(idx.iter_mut()).zip(zipped) {
                (*k, *i) = z;
            }
            black_box((keys, idx));
        });
        let ours_p = time_sort(&pairs, reps, |d| {
            let (mut keys, mut idx): (Vec<f32>, Vec<u32>) = d.iter().copied().unzip();
            tandem_kernels::sort_pairs_f32(&mut keys, &mut idx).expect("equal lengths");
            black_box((keys, idx));
        });
        rows.push(Row {
            what: "pairs".into(),
            n,
            ours: ours_p,
            std: std_p,
        });
    }
    println!("backend: {:?}", tandem_kernels::sort::sort_backend());
    println!(
        "{:<10} {:>6} {:>14} {:>14} {:>9}",
        "type", "n", "tandem ns/key", "std ns/key", "speedup"
    );
    for r in &rows {
        let per = |d: Duration| d.as_secs_f64() * 1e9 / r.n as f64;
        println!(
            "{:<10} {:>6} {:>14.2} {:>14.2} {:>8.2}x",
            r.what,
            label(r.n),
            per(r.ours),
            per(r.std),
            r.speedup()
        );
    }
    top_k_table(quick);
    println!("(f32-keys: tandem's f32 sort against std sorting the same integer keys)");
    let at_1m = |what: &str| {
        rows.iter()
            .find(|r| r.what == what && r.n == 1 << 20)
            .map_or("not measured (quick run)".to_string(), |r| {
                format!("{:.2}", r.speedup())
            })
    };
    println!(
        "sort_1M_u32: {} f32_same_keys: {}",
        at_1m("u32"),
        at_1m("f32-keys")
    );
}
