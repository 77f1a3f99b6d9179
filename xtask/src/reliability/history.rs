//! A crash-looped split run's history, rebuilt from its step log (`tandem split
//! --step-log`), checked against a run that was never killed.
//!
//! Process `i` starts at `start[i]` (its checkpoint's step) and logs each step it trains.
//! What survives of it is `[start[i], start[i + 1])`: the steps the next process did not
//! roll back. The surviving steps, process after process, are the run's history:
//! - a step of `0..total` that no process kept is **lost** (a restart resumed past the
//!   last step trained, or a process logged a step twice or out of order);
//! - a kept step whose loss differs from the uninterrupted run's at that step is
//!   **doubled**: the device's layers or the cloud's top saw a history other than each
//!   earlier step once (a step trained twice on a side, or a state restored from the wrong
//!   step), and every later loss shows it. Training is deterministic (same seed, data
//!   order and single-threaded CPU compute), so equal histories give equal bits;
//! - steps trained and then rolled back by a restart are **retrained** (expected: the
//!   work a kill costs).

use anyhow::{Context, Result, bail};

/// One process's part of the log.
#[derive(Debug, Default, PartialEq)]
pub struct Process {
    /// The step it started training at.
    pub start: u64,
    /// The steps it trained, with each loss's f32 bits, in order.
    pub steps: Vec<(u64, u32)>,
}

/// Parses a step log (`start STEP pid PID` / `step STEP LOSS BITS` lines). A last line
/// cut short by a kill is ignored; anything else malformed is an error.
pub fn parse(log: &str) -> Result<Vec<Process>> {
    let mut processes: Vec<Process> = Vec::new();
    // Up to the last newline: a line after it was cut short.
    let complete = &log[..log.rfind('\n').map_or(0, |at| at + 1)];
    for (n, line) in complete.lines().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        let bad = || format!("step log line {}: `{line}`", n + 1);
        match fields.as_slice() {
            ["start", step, "pid", _] => processes.push(Process {
                start: step.parse().with_context(bad)?,
                steps: Vec::new(),
            }),
            ["step", step, _, bits] => {
                let Some(process) = processes.last_mut() else {
                    bail!("{}: a step before any start", bad());
                };
                let step = step.parse().with_context(bad)?;
                let bits = u32::from_str_radix(bits, 16).with_context(bad)?;
                process.steps.push((step, bits));
            }
            _ => bail!("{}: not a step log line", bad()),
        }
    }
    Ok(processes)
}

/// What a history check found.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Processes in the log (each after the first is a restart).
    pub processes: usize,
    /// Steps of `0..total` no process kept.
    pub lost: u64,
    /// Kept steps whose loss differs from the uninterrupted run's.
    pub doubled: u64,
    /// Steps trained and then rolled back by a restart.
    pub retrained: u64,
    /// The first kept step whose loss differs, with both losses.
    pub first_difference: Option<(u64, f32, f32)>,
}

/// Checks `crashed` (the crash loop's processes) against `clean` (an uninterrupted run of
/// the same `total` steps).
pub fn check(crashed: &[Process], clean: &Process, total: u64) -> Verdict {
    let reference: std::collections::HashMap<u64, u32> = clean.steps.iter().copied().collect();
    let mut verdict = Verdict {
        processes: crashed.len(),
        ..Verdict::default()
    };
    let mut kept = vec![0u32; total as usize];
    for (i, process) in crashed.iter().enumerate() {
        let end = crashed.get(i + 1).map_or(total, |next| next.start);
        for (expected, &(step, bits)) in (process.start..).zip(&process.steps) {
            if step != expected || step >= total {
                // Out of order or repeated within a process: nothing after it counts.
                break;
            }
            if step >= end {
                verdict.retrained += 1;
                continue;
            }
            kept[step as usize] += 1;
            if reference.get(&step) != Some(&bits) {
                verdict.doubled += 1;
                if verdict.first_difference.is_none() {
                    let clean = reference
                        .get(&step)
                        .copied()
                        .map_or(f32::NAN, f32::from_bits);
                    verdict.first_difference = Some((step, f32::from_bits(bits), clean));
                }
            }
        }
    }
    verdict.lost = kept.iter().filter(|&&k| k == 0).count() as u64;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn losses(range: std::ops::Range<u64>) -> Vec<(u64, u32)> {
        range.map(|s| (s, (s as f32 + 0.5).to_bits())).collect()
    }

    fn log(processes: &[(u64, std::ops::Range<u64>)]) -> String {
        let mut text = String::new();
        for (pid, (start, steps)) in processes.iter().enumerate() {
            text += &format!("start {start} pid {pid}\n");
            for (s, bits) in losses(steps.clone()) {
                text += &format!("step {s} {} {bits:08x}\n", f32::from_bits(bits));
            }
        }
        text
    }

    #[test]
    fn restarts_from_checkpoints_lose_and_double_nothing() {
        let clean = Process {
            start: 0,
            steps: losses(0..50),
        };
        // Killed at 23 (checkpoint 20) and at 41 (checkpoint 40); the last line is cut
        // short (as by a kill during a write).
        let text = log(&[(0, 0..23), (20, 20..41), (40, 40..50)]) + "step 50 0.";
        let processes = parse(&text).unwrap();
        assert_eq!(processes.len(), 3);
        let verdict = check(&processes, &clean, 50);
        assert_eq!(
            (verdict.lost, verdict.doubled, verdict.retrained),
            (0, 0, 4)
        );
    }

    #[test]
    fn a_resume_past_the_last_step_trained_loses_the_gap() {
        let clean = Process {
            start: 0,
            steps: losses(0..30),
        };
        let processes = parse(&log(&[(0, 0..12), (20, 20..30)])).unwrap();
        let verdict = check(&processes, &clean, 30);
        assert_eq!((verdict.lost, verdict.doubled), (8, 0));
    }

    #[test]
    fn a_step_the_cloud_trained_twice_shows_in_every_later_loss() {
        let clean = Process {
            start: 0,
            steps: losses(0..30),
        };
        let mut processes = parse(&log(&[(0, 0..15), (10, 10..30)])).unwrap();
        // After the restart the top was one update ahead: every loss from 10 on differs.
        for (_, bits) in &mut processes[1].steps {
            *bits ^= 1;
        }
        let verdict = check(&processes, &clean, 30);
        assert_eq!(
            (verdict.lost, verdict.doubled, verdict.retrained),
            (0, 20, 5)
        );
        assert_eq!(verdict.first_difference.map(|d| d.0), Some(10));
    }

    #[test]
    fn malformed_lines_are_errors_but_a_cut_last_line_is_not() {
        assert!(parse("start 0 pid 1\nstep x 0.5 3f000000\n").is_err());
        assert!(parse("step 0 0.5 3f000000\n").is_err());
        assert!(parse("hello\n").is_err());
        assert_eq!(
            parse("start 0 pid 1\nstep 0 0.5 3f00").unwrap()[0].steps,
            vec![]
        );
    }
}
