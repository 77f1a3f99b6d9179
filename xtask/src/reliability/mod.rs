//! `cargo xtask reliability <crash|netem|hostile>`: the real binaries under real
//! failures and attacks, with what was lost, doubled or let through counted (issue 14). Each figure goes into BENCHMARKS.md
//! ("Reliability") with its command and machine.

mod crash;
mod fl_crash;
mod fl_run;
mod history;
mod hostile;
mod hostile_report;
mod netem;
mod relay;
mod split_run;

use anyhow::{Result, bail};

const USAGE: &str =
    "usage: cargo xtask reliability crash [--cycles N] [--cloud-cycles N] [--steps N]
           [--fl-cycles N] [--fl-cloud-cycles N] [--rounds N] [--seed S] [--only split|fl]
       cargo xtask reliability netem [--steps N] [--rounds N] [--only split|fl]
       cargo xtask reliability hostile [--rounds N]";

/// Runs `reliability <what> [flags]`.
pub fn run(args: &[String]) -> Result<()> {
    match args.split_first() {
        Some((what, rest)) if what == "crash" => crash::run(&crash::Options::parse(rest)?),
        Some((what, rest)) if what == "netem" => netem::run(rest),
        Some((what, rest)) if what == "hostile" => hostile::run(rest),
        _ => bail!("{USAGE}"),
    }
}
