//! What `cargo xtask reliability hostile` found: each attack's verdict (the attacker's
//! line, or the cloud's log where the attacker cannot see), the replaying participant's
//! rounds, and the honest devices' rounds with and without the attack.

use super::fl_run::{Committed, FlRun};
use crate::util;
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// One attack and what became of it.
struct Finding {
    attack: String,
    refused: bool,
    /// "refused", "contained", "NOT REFUSED", "NOT RUN".
    verdict: &'static str,
    detail: String,
}

/// What became of each attack of a run.
pub struct Findings(Vec<Finding>);

impl Findings {
    /// From `tandem hostile`'s output and the attacked cloud's log; an attack of
    /// `expected` without a verdict counts as not refused (`replayed-update`'s verdict is
    /// the rounds', [`Report::read`]).
    pub fn read(output: &str, cloud_log: &str, expected: &[&str]) -> Result<Self> {
        let mut findings = Vec::new();
        for line in output.lines() {
            let Some(rest) = line.strip_prefix("attack ") else {
                continue;
            };
            let (attack, rest) = rest
                .split_once(": ")
                .context("an attack line without a verdict")?;
            let (said, detail) = rest.split_once(": ").unwrap_or((rest, ""));
            let (refused, verdict, detail) = match said {
                "refused" => (true, "refused", detail.to_string()),
                "contained" => (true, "contained", detail.to_string()),
                "see the cloud's log" => match stream_refusal(cloud_log, attack) {
                    Some(reason) => (true, "refused", format!("{detail}; the cloud: {reason}")),
                    None => (
                        false,
                        "NOT REFUSED",
                        format!("{detail}; nothing in the cloud's log"),
                    ),
                },
                _ => (false, "NOT REFUSED", detail.to_string()),
            };
            findings.push(Finding {
                attack: attack.to_string(),
                refused,
                verdict,
                detail,
            });
        }
        for attack in expected {
            if *attack != "replayed-update" && !findings.iter().any(|f| f.attack == *attack) {
                findings.push(Finding {
                    attack: attack.to_string(),
                    refused: false,
                    verdict: "NOT RUN",
                    detail: "no verdict: the run ended before the attack did (a longer run)".into(),
                });
            }
        }
        Ok(Self(findings))
    }

    /// Whether every attack was refused or contained.
    pub fn all_refused(&self) -> bool {
        self.0.iter().all(|f| f.refused)
    }

    /// (attacks, refused or contained).
    pub fn counts(&self) -> (usize, usize) {
        (self.0.len(), self.0.iter().filter(|f| f.refused).count())
    }

    /// The table of attacks and verdicts.
    pub fn print_table(&self) {
        println!("\n| attack | verdict | what the cloud did |\n|---|---|---|");
        for f in &self.0 {
            println!(
                "| {} | {} | {} |",
                f.attack,
                f.verdict,
                f.detail.replace('|', "/")
            );
        }
    }
}

/// The federated run's findings.
pub struct Report {
    findings: Findings,
    calm: Committed,
    attacked: Committed,
}

/// The device of the replaying participant.
const REPLAYER: &str = "hostile-replayed-update";

impl Report {
    /// [`Findings::read`], the replaying participant's verdict from both runs' metrics.
    pub fn read(
        output: &str,
        cloud_log: &str,
        (attacked, calm): (&FlRun, &FlRun),
        expected: &[&str],
    ) -> Result<Self> {
        let mut findings = Findings::read(output, cloud_log, expected)?;
        let attacked = attacked.committed()?;
        findings
            .0
            .push(replay_finding(output, cloud_log, &attacked));
        Ok(Self {
            findings,
            calm: calm.committed()?,
            attacked,
        })
    }

    /// Whether every attack was refused or contained.
    pub fn all_refused(&self) -> bool {
        self.findings.all_refused()
    }

    /// The table, the figures and the last line.
    pub fn print(&self, calm_rss: f64, attacked_rss: f64) {
        self.findings.print_table();
        let (calm, attacked) = (summary(&self.calm), summary(&self.attacked));
        println!(
            "\n| run | rounds | round p50 s | round p90 s | round max s | test accuracy | cloud peak RSS MiB |\n|---|---|---|---|---|---|---|"
        );
        for (name, s, rss) in [
            ("no attack", &calm, calm_rss),
            ("attacked", &attacked, attacked_rss),
        ] {
            println!(
                "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2}% | {rss:.0} |",
                s.rounds,
                s.p50,
                s.p90,
                s.max,
                s.accuracy * 100.0
            );
        }
        let (attacks, refused) = self.findings.counts();
        println!(
            "reliability_hostile: attacks {attacks} refused {refused} cloud_peak_rss_mib {attacked_rss:.0} (calm {calm_rss:.0}) honest_round_p50_change {:+.3}",
            attacked.p50 / calm.p50 - 1.0
        );
    }
}

/// The reason of the cloud's first "refused a stream" line for `attack`'s device.
fn stream_refusal(cloud_log: &str, attack: &str) -> Option<String> {
    let node = format!("node=hostile-{attack} ");
    cloud_log
        .lines()
        .filter(|l| l.contains(&node) || l.ends_with(&node[..node.len() - 1]))
        .find_map(|l| l.split_once("refused a stream: "))
        .map(|(_, reason)| reason.split(" node=").next().unwrap_or(reason).to_string())
}

/// The replaying participant: the updates it sent to be refused against those the cloud
/// refused from it (by reason, from the log), and the rounds that counted it.
fn replay_finding(output: &str, cloud_log: &str, attacked: &Committed) -> Finding {
    let (mut rounds, mut to_refuse) = (0u64, 0u64);
    for line in output
        .lines()
        .filter(|l| l.starts_with("replayed-update: round "))
    {
        let bad = line
            .split_once(" and ")
            .and_then(|(_, rest)| rest.split_once(" to refuse"))
            .and_then(|(n, _)| n.parse::<u64>().ok());
        if let Some(bad) = bad {
            rounds += 1;
            to_refuse += bad;
        }
    }
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let node = format!("node={REPLAYER}");
    for line in cloud_log
        .lines()
        .filter(|l| l.contains("update refused") && l.contains(&node))
    {
        let reason = line
            .split_once("reason=")
            .map_or("?", |(_, r)| r.split_whitespace().next().unwrap_or("?"));
        *reasons.entry(reason.to_string()).or_default() += 1;
    }
    let refused: u64 = reasons.values().sum();
    let counted: Vec<usize> = attacked
        .rounds
        .iter()
        .map(|(_, names)| names.iter().filter(|n| *n == REPLAYER).count())
        .collect();
    let counted_rounds = counted.iter().filter(|&&c| c > 0).count();
    let twice = counted.iter().filter(|&&c| c > 1).count();
    let by_reason: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let detail = format!(
        "{rounds} rounds with a valid update, a replay, one in another device's name and last round's: \
         {to_refuse} to refuse, {refused} refused ({}); counted in {counted_rounds} rounds, twice in {twice}",
        by_reason.join(", ")
    );
    let held = rounds > 0 && refused >= to_refuse && twice == 0;
    Finding {
        attack: "replayed-update".into(),
        refused: held,
        verdict: if held { "refused" } else { "NOT REFUSED" },
        detail,
    }
}

/// Round-time figures of a run.
struct Summary {
    rounds: usize,
    p50: f64,
    p90: f64,
    max: f64,
    accuracy: f64,
}

fn summary(run: &Committed) -> Summary {
    let mut seconds = run.seconds.clone();
    Summary {
        rounds: seconds.len(),
        p50: util::quantile(&mut seconds, 0.5),
        p90: util::quantile(&mut seconds, 0.9),
        max: util::quantile(&mut seconds, 1.0),
        accuracy: run.accuracy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-11-30T18:58:19.807637Z  WARN tandem_cloud::server: refused a stream: receiving failed: stream finished early (13 bytes read) node=hostile-truncated-frame refused=1
2026-11-30T18:58:20.000000Z  WARN tandem_cloud::hub: update refused node=hostile-replayed-update reason=Duplicate
2026-11-30T18:58:20.000001Z  WARN tandem_cloud::hub: update refused node=hostile-replayed-update reason=Spoofed
2026-11-30T18:58:21.000000Z  WARN tandem_cloud::hub: update refused node=fl-device-1 reason=Late
";

    #[test]
    fn reads_a_streams_refusal_from_the_cloud_log() {
        assert_eq!(
            stream_refusal(LOG, "truncated-frame").as_deref(),
            Some("receiving failed: stream finished early (13 bytes read)")
        );
        assert_eq!(stream_refusal(LOG, "garbage-frame"), None);
    }

    #[test]
    fn a_replayer_is_refused_when_the_cloud_refused_each_bad_update_and_counted_it_once() {
        let output = "replayed-update: round 1: sent 1 valid update and 2 to refuse (a replay, one as fl-device-0); the cloud: 5 accepted, 2 refused in all\n";
        let committed = |names: &[&str]| Committed {
            rounds: vec![(1, names.iter().map(|n| n.to_string()).collect())],
            accuracy: 0.5,
            seconds: vec![1.0],
            state: Vec::new(),
        };
        let once = committed(&["fl-device-0", REPLAYER]);
        let finding = replay_finding(output, LOG, &once);
        assert!(finding.refused, "{}", finding.detail);
        assert!(
            finding.detail.contains("1 Duplicate, 1 Spoofed"),
            "{}",
            finding.detail
        );
        // Counted twice in a round, or fewer refusals than bad updates: not refused.
        let twice = committed(&[REPLAYER, REPLAYER]);
        assert!(!replay_finding(output, LOG, &twice).refused);
        let three = output.replace("and 2 to refuse", "and 3 to refuse");
        assert!(!replay_finding(&three, LOG, &once).refused);
    }
}
