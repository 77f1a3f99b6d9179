//! Secure aggregation's cost per round against plain aggregation of the same updates,
//! one process, every message serialised as it would be sent (`fl::secagg::round`).
//!
//! `cargo xtask bench secagg` (or `cargo bench -p tandem-tests --bench secagg`).
//! Updates: 74,498 values each (the `sentiment` task's adapters and head, rank 8), 8-bit
//! fixed point with stochastic rounding. Rows: 10 participants (all neighbours, threshold
//! 5) and 100 (all neighbours, threshold 50; and SecAgg+ with 40 neighbours, threshold
//! 21: a threshold is a strict majority of the neighbours), each with none and 30% of the participants dropping after sharing their secrets
//! (the case whose masks the cloud must rebuild). Baselines, timed in the same run: a
//! device's plain fixed-point encoding of its update, and the cloud's plain sum of the
//! same f32 updates. Times are medians of 3 rounds.
//!
//! Last line: `secagg_overhead (30% dropped): n10 up X down Y cloud_ms Z n100 ...` for the
//! full graphs: a surviving device's bytes up (its masked input and its share of the
//! protocol) and a device's bytes down, each against one f32 update, and the cloud's
//! milliseconds for the round.

use std::time::{Duration, Instant};
use tandem_runtime::fl::secagg::Settings;
use tandem_runtime::fl::secagg::round::{Traffic, run};
use tandem_runtime::rng::SplitMix64;

const LEN: usize = 74_498;
const REPEATS: usize = 3;

fn updates(n: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(n as u64);
    (0..n)
        .map(|_| {
            (0..LEN)
                .map(|_| (rng.next_f64() as f32 - 0.5) * 0.02)
                .collect()
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Row {
    participants: usize,
    neighbours: usize,
    threshold: usize,
    drop_share: f64,
}

fn main() {
    let rows = [
        Row {
            participants: 10,
            neighbours: 9,
            threshold: 5,
            drop_share: 0.0,
        },
        Row {
            participants: 10,
            neighbours: 9,
            threshold: 5,
            drop_share: 0.3,
        },
        Row {
            participants: 100,
            neighbours: 99,
            threshold: 50,
            drop_share: 0.0,
        },
        Row {
            participants: 100,
            neighbours: 99,
            threshold: 50,
            drop_share: 0.3,
        },
        Row {
            participants: 100,
            neighbours: 40,
            threshold: 21,
            drop_share: 0.0,
        },
        Row {
            participants: 100,
            neighbours: 40,
            threshold: 21,
            drop_share: 0.3,
        },
    ];
    let f32_update = (LEN * 4) as f64;
    println!(
        "| participants | neighbours (threshold) | dropped | device ms (secagg) | device ms (encode only) | cloud ms (secagg) | cloud ms (plain f32 sum) | masked input KB | protocol KB up per device | down KB per device | a survivor's up vs f32 update |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut headline = Vec::new();
    for row in rows {
        let n = row.participants;
        let ups = updates(n);
        let dropped: Vec<usize> = {
            let mut ids: Vec<usize> = (0..n).collect();
            SplitMix64::new(77).shuffle(&mut ids);
            ids.truncate((n as f64 * row.drop_share).round() as usize);
            ids
        };
        let survivors = n - dropped.len();
        let settings = Settings::new(1, n, row.neighbours, row.threshold, LEN, 0.05, 8)
            .expect("valid settings");
        let mut traffic: Vec<Traffic> = Vec::new();
        for r in 0..REPEATS {
            let (opened, t) =
                run(settings, &ups, &dropped, &[], r as u64).expect("the round opens");
            assert_eq!(opened.survivors.len(), survivors);
            traffic.push(t);
        }
        // Baselines: each device's fixed-point encoding; the cloud's sum of f32 updates.
        let fixed = settings.fixed;
        let encode = median(
            (0..REPEATS)
                .map(|_| {
                    let started = Instant::now();
                    for (i, u) in ups.iter().enumerate() {
                        std::hint::black_box(fixed.encode(u, i as u64));
                    }
                    started.elapsed()
                })
                .collect(),
        );
        let plain_sum = median(
            (0..REPEATS)
                .map(|_| {
                    let started = Instant::now();
                    let mut sum = vec![0f32; LEN];
                    for u in ups.iter().take(survivors) {
                        for (s, v) in sum.iter_mut().zip(u) {
                            *s += v;
                        }
                    }
                    std::hint::black_box(&sum);
                    started.elapsed()
                })
                .collect(),
        );
        let device = median(traffic.iter().map(|t| t.device_time).collect()) / n as u32;
        let cloud = median(traffic.iter().map(|t| t.cloud_time).collect());
        let t = &traffic[0];
        // Keys, shares and reveals per device; the masked input per survivor.
        let protocol = (t.up_bytes - t.masked_bytes) as f64 / n as f64;
        let masked = t.masked_bytes as f64 / survivors as f64;
        let up = protocol + masked;
        let down = t.down_bytes as f64 / n as f64;
        println!(
            "| {n} | {} ({}) | {:.0}% | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {:.3}x |",
            row.neighbours,
            row.threshold,
            row.drop_share * 100.0,
            ms(device),
            ms(encode / n as u32),
            ms(cloud),
            ms(plain_sum),
            masked / 1e3,
            protocol / 1e3,
            down / 1e3,
            up / f32_update
        );
        if row.drop_share > 0.0 && row.neighbours + 1 == n {
            headline.push(format!(
                "n{n} up {:.3} down {:.3} cloud_ms {:.0}",
                up / f32_update,
                down / f32_update,
                ms(cloud)
            ));
        }
    }
    println!("secagg_overhead (30% dropped): {}", headline.join(" "));
}
