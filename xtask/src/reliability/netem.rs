//! `cargo xtask reliability netem`: a split run and a federated run through each
//! lossy-link profile, against the same runs on a clean link: wall time, and steps or
//! updates lost or doubled.
//!
//! The link is [`super::relay`], a UDP relay between each device (`tandem split`, or each
//! `tandem fl`) and `tandem-cloud serve` that drops, delays, corrupts and reorders
//! datagrams and blacks out, as `tc netem` on a veth pair between two network namespaces
//! would (this machine kind's kernel has no netem module, and the relay needs no root).

use super::fl_run::{self, Committed, DEVICES, FlRun};
use super::history;
use super::relay::{Counts, Impairment, Relay};
use super::split_run::{Device, accuracy, read, with_cloud};
use super::{Sides, fresh_dir};
use crate::split;
use crate::util;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::Path;
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

/// `--steps N` (split, default 150), `--rounds N` (federated, default 30), `--only
/// split|fl`.
pub fn run(args: &[String]) -> Result<()> {
    let steps = util::number_flag(args, "--steps", 150u64)?;
    let rounds = util::number_flag(args, "--rounds", 30u64)?;
    if steps < 20 || rounds < 3 {
        bail!("--steps must be at least 20 and --rounds at least 3");
    }
    let Sides {
        split: split_runs,
        fl: fl_runs,
    } = Sides::parse(args)?;
    let bin = split::build_and_issue("release")?;
    let dir = fresh_dir("netem")?;
    let (mut split_rows, mut fl_rows) = (Vec::new(), Vec::new());
    for (i, (name, impairment)) in profiles().into_iter().enumerate() {
        let seed = 1 + 10 * i as u64;
        if split_runs {
            eprintln!("reliability netem: {name}, split");
            split_rows.push(split_profile(
                &bin,
                &dir,
                (i, name, impairment, seed),
                steps,
            )?);
        }
        if fl_runs {
            eprintln!("reliability netem: {name}, federated");
            fl_rows.push(fl_profile(&bin, &dir, (i, name, impairment, seed), rounds)?);
        }
    }
    // Each table's outcome per profile, in profile order.
    let mut outcomes: Vec<Outcome> = vec![Outcome::default(); profiles().len()];
    let tables = [
        split_runs.then(|| report(&split_rows, steps)),
        fl_runs.then(|| report_fl(&fl_rows)),
    ];
    for table in tables.into_iter().flatten() {
        for (total, outcome) in outcomes.iter_mut().zip(table?) {
            total.failed |= outcome.failed;
            total.lost += outcome.lost;
            total.doubled += outcome.doubled;
        }
    }
    let completed = outcomes.iter().filter(|o| !o.failed).count();
    let lost: u64 = outcomes.iter().map(|o| o.lost).sum();
    let doubled: u64 = outcomes.iter().map(|o| o.doubled).sum();
    println!(
        "reliability_netem: profiles {} completed {completed} lost {lost} doubled {doubled}",
        outcomes.len()
    );
    if completed < outcomes.len() || lost + doubled > 0 {
        bail!(
            "a run did not complete, or lost or doubled work (logs in {})",
            dir.display()
        );
    }
    Ok(())
}

/// One profile's runs: whether any did not complete (or ended in another state than the
/// clean link's), and the work lost and doubled.
#[derive(Clone, Default)]
struct Outcome {
    failed: bool,
    lost: u64,
    doubled: u64,
}

/// A profile: its index, name, impairment and relay seed.
type Profile = (usize, &'static str, Impairment, u64);

/// The split run through `profile`'s relay.
fn split_profile(bin: &Path, dir: &Path, profile: Profile, steps: u64) -> Result<Row> {
    let (i, name, impairment, seed) = profile;
    let device = Device::new(bin, dir, &format!("profile-{i}"), steps);
    let started = Instant::now();
    let (completed, counts) = with_cloud(bin, &dir.join(format!("cloud-{i}")), |addr| {
        let upstream: SocketAddr = addr
            .parse()
            .with_context(|| format!("cloud address {addr}"))?;
        let relay = Relay::start(upstream, impairment, seed)?;
        let status = device
            .command(&relay.addr.to_string(), false)
            .status()
            .context("cannot start tandem split")?;
        Ok((status.success(), counted(&[relay])))
    })?;
    Ok(Row {
        name,
        completed,
        seconds: started.elapsed().as_secs_f64(),
        counts,
        device,
    })
}

/// Datagrams forwarded, dropped, corrupted and reordered by `relays`, summed.
fn counted(relays: &[Relay]) -> [u64; 4] {
    let each = |pick: fn(&Counts) -> &std::sync::atomic::AtomicU64| {
        relays
            .iter()
            .map(|r| pick(&r.counts).load(Ordering::Relaxed))
            .sum()
    };
    [
        each(|c| &c.forwarded),
        each(|c| &c.dropped),
        each(|c| &c.corrupted),
        each(|c| &c.reordered),
    ]
}

/// The federated run with each device behind a relay of `profile`'s.
fn fl_profile(bin: &Path, dir: &Path, profile: Profile, rounds: u64) -> Result<FlRow> {
    let (i, name, impairment, seed) = profile;
    let run = FlRun::new(bin, dir, &format!("fl-profile-{i}"), rounds)?;
    let cloud = run.start_cloud(None)?;
    let upstream: SocketAddr = cloud
        .addr
        .parse()
        .with_context(|| format!("cloud address {}", cloud.addr))?;
    let relays = (0..DEVICES)
        .map(|d| Relay::start(upstream, impairment, seed + d as u64))
        .collect::<Result<Vec<_>>>()?;
    let targets = std::array::from_fn(|d| relays[d].addr.to_string());
    let started = Instant::now();
    let driven = run.drive(cloud, &targets, |_, _| Ok(None), None);
    let seconds = started.elapsed().as_secs_f64();
    if let Err(err) = &driven {
        eprintln!("  {name}: {err:#}");
    }
    Ok(FlRow {
        name,
        restarts: driven.as_ref().ok().copied(),
        seconds,
        counts: counted(&relays),
        committed: run.committed().ok(),
    })
}

/// One profile's federated run.
struct FlRow {
    name: &'static str,
    /// Device processes restarted after exiting; `None` if the run did not finish.
    restarts: Option<u32>,
    seconds: f64,
    counts: [u64; 4],
    committed: Option<Committed>,
}

/// Prints the federated table against the clean link's run.
fn report_fl(rows: &[FlRow]) -> Result<Vec<Outcome>> {
    let clean = &rows[0];
    let Some(reference) = &clean.committed else {
        bail!("the federated run on the clean link did not finish");
    };
    println!(
        "\n| link ({DEVICES} fl devices, {} rounds) | completed | wall s | vs clean | updates lost | doubled | final state | test accuracy | device restarts | datagrams forwarded / dropped / corrupted / reordered |\n|---|---|---|---|---|---|---|---|---|---|",
        reference.rounds.len()
    );
    let mut outcomes = Vec::new();
    for row in rows {
        let finished = row.restarts.is_some() && row.committed.is_some();
        let verdict = row
            .committed
            .as_ref()
            .map(|c| (fl_run::check(c, reference), c.accuracy));
        outcomes.push(verdict.as_ref().map_or(
            Outcome {
                failed: true,
                ..Outcome::default()
            },
            |(v, _)| Outcome {
                failed: !finished || !v.same_state,
                lost: v.lost,
                doubled: v.doubled,
            },
        ));
        let [forwarded, dropped, corrupted, reordered] = row.counts;
        let (lost, doubled, state, accuracy) =
            verdict
                .as_ref()
                .map_or(("-".into(), "-".into(), "-", "-".into()), |(v, a)| {
                    (
                        v.lost.to_string(),
                        v.doubled.to_string(),
                        if v.same_state {
                            "same bytes"
                        } else {
                            "DIFFERENT"
                        },
                        format!("{:.2}%", a * 100.0),
                    )
                });
        println!(
            "| {} | {} | {:.0} | {:.2}x | {lost} | {doubled} | {state} | {accuracy} | {} | {forwarded} / {dropped} / {corrupted} / {reordered} |",
            row.name,
            if finished { "yes" } else { "no" },
            row.seconds,
            row.seconds / clean.seconds,
            row.restarts.map_or("-".into(), |r| r.to_string()),
        );
    }
    Ok(outcomes)
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

/// Prints the split table against the clean link's run.
fn report(rows: &[Row], steps: u64) -> Result<Vec<Outcome>> {
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
    let mut outcomes = Vec::new();
    for row in rows {
        let processes = history::parse(&read(&row.device.step_log)?)?;
        let verdict = history::check(&processes, reference, steps);
        let accuracy = accuracy(&row.device.metrics).ok();
        outcomes.push(Outcome {
            failed: !row.completed,
            lost: verdict.lost,
            doubled: verdict.doubled,
        });
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
    Ok(outcomes)
}
