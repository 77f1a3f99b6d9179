//! `cargo xtask reliability netem`: a split run through each lossy-link profile, against the
//! same run on a clean link: wall time, and steps lost or doubled.
//!
//! The link is [`super::relay`], a UDP relay between `tandem split` and `tandem-cloud
//! serve` that drops, delays, corrupts and reorders datagrams and blacks out, as `tc
//! netem` on a veth pair between two network namespaces would (this machine kind's kernel
//! has no netem module, and the relay needs no root).

use super::history;
use super::relay::{Impairment, Relay};
use super::split_run::{Device, accuracy, read, with_cloud};
use crate::split;
use crate::util;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The profiles, the clean link first (every other is compared with it).
fn profiles() -> Vec<(&'static str, Impairment)> {
    let none = Impairment::default();
    vec![
        ("clean", none),
        (
            "10% loss + 50 ms delay",
            Impairment {
                loss: 0.10,
                delay: Duration::from_millis(50),
                ..none
            },
        ),
        ("20% loss", Impairment { loss: 0.20, ..none }),
        (
            "1% corruption",
            Impairment {
                corrupt: 0.01,
                ..none
            },
        ),
        (
            "reordering (25% of datagrams 30 ms late)",
            Impairment {
                reorder: 0.25,
                reorder_gap: Duration::from_millis(30),
                ..none
            },
        ),
        (
            "30 s blackout (from 20 s in)",
            Impairment {
                blackout: Some((Duration::from_secs(20), Duration::from_secs(30))),
                ..none
            },
        ),
    ]
}

/// `--steps N` (default 150).
pub fn run(args: &[String]) -> Result<()> {
    let steps: u64 = util::flag(args, "--steps").map_or(Ok(150), |v| {
        v.parse()
            .with_context(|| format!("--steps takes a number, got '{v}'"))
    })?;
    if steps < 20 {
        bail!("--steps must be at least 20");
    }
    let bin = split::build_and_issue("release")?;
    let dir = util::target_dir().join("reliability").join("netem");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for (i, (name, impairment)) in profiles().into_iter().enumerate() {
        eprintln!("reliability netem: {name}");
        let device = Device::new(&bin, &dir, &format!("profile-{i}"), steps);
        let started = Instant::now();
        let (completed, counts) = with_cloud(&bin, &dir.join(format!("cloud-{i}")), |addr| {
            let upstream: SocketAddr = addr
                .parse()
                .with_context(|| format!("cloud address {addr}"))?;
            let relay = Relay::start(upstream, impairment, 1 + i as u64)?;
            let status = device
                .command(&relay.addr.to_string(), false)
                .status()
                .context("cannot start tandem split")?;
            let c = &relay.counts;
            let counts = [&c.forwarded, &c.dropped, &c.corrupted, &c.reordered]
                .map(|n| n.load(Ordering::Relaxed));
            Ok((status.success(), counts))
        })?;
        rows.push(Row {
            name,
            completed,
            seconds: started.elapsed().as_secs_f64(),
            counts,
            device,
        });
    }
    report(&rows, steps)
}

/// One profile's run.
struct Row {
    name: &'static str,
    completed: bool,
    seconds: f64,
    /// Datagrams forwarded, dropped, corrupted, reordered.
    counts: [u64; 4],
    device: Device,
}

/// Prints the table and the last line; fails if any profile lost or doubled a step.
fn report(rows: &[Row], steps: u64) -> Result<()> {
    let clean = &rows[0];
    let reference = history::parse(&read(&clean.device.step_log)?)?;
    let [reference] = reference.as_slice() else {
        bail!(
            "the clean run's step log holds {} processes",
            reference.len()
        );
    };
    let clean_accuracy = accuracy(&clean.device.metrics)?;
    println!(
        "\n| link | completed | wall s | vs clean | lost | doubled | held-out accuracy | datagrams forwarded / dropped / corrupted / reordered |\n|---|---|---|---|---|---|---|---|"
    );
    let (mut completed, mut lost, mut doubled) = (0, 0, 0);
    for row in rows {
        let processes = history::parse(&read(&row.device.step_log)?)?;
        let verdict = history::check(&processes, reference, steps);
        let accuracy = accuracy(&row.device.metrics).ok();
        completed += u64::from(row.completed);
        lost += verdict.lost;
        doubled += verdict.doubled;
        let [forwarded, dropped, corrupted, reordered] = row.counts;
        println!(
            "| {} | {} | {:.0} | {:.2}x | {} | {} | {} | {forwarded} / {dropped} / {corrupted} / {reordered} |",
            row.name,
            if row.completed { "yes" } else { "no" },
            row.seconds,
            row.seconds / clean.seconds,
            verdict.lost,
            verdict.doubled,
            accuracy.map_or("-".into(), |a| format!("{:.2}%", a * 100.0))
        );
        if accuracy.is_some_and(|a| a != clean_accuracy) {
            eprintln!(
                "{}: held-out accuracy differs from the clean link's",
                row.name
            );
        }
    }
    println!(
        "reliability_netem: profiles {} completed {completed} lost {lost} doubled {doubled}",
        rows.len()
    );
    if completed < rows.len() as u64 || lost + doubled > 0 {
        bail!("a profile did not complete, or lost or doubled steps");
    }
    Ok(())
}
