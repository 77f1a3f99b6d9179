//! `cargo xtask reliability <crash|netem|hostile>`: the real binaries under real
//! failures and attacks, with what was lost, doubled or let through counted (issue 14). Each figure goes into BENCHMARKS.md
//! ("Reliability") with its command and machine.

mod crash;
mod fl_crash;
mod fl_run;
mod history;
mod hostile;
mod hostile_report;
mod hostile_split;
mod netem;
mod relay;
mod split_run;

use crate::util;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

const USAGE: &str =
    "usage: cargo xtask reliability crash [--cycles N] [--cloud-cycles N] [--steps N]
           [--fl-cycles N] [--fl-cloud-cycles N] [--rounds N] [--seed S] [--only split|fl]
       cargo xtask reliability netem [--steps N] [--rounds N] [--only split|fl]
       cargo xtask reliability hostile [--rounds N] [--steps N] [--only split|fl]";

/// Runs `reliability <what> [flags]`.
pub fn run(args: &[String]) -> Result<()> {
    match args.split_first() {
        Some((what, rest)) if what == "crash" => crash::run(&crash::Options::parse(rest)?),
        Some((what, rest)) if what == "netem" => netem::run(rest),
        Some((what, rest)) if what == "hostile" => hostile::run(rest),
        _ => bail!("{USAGE}"),
    }
}

/// Which runs a command makes: `--only split|fl`, both without it.
#[derive(Clone, Copy)]
struct Sides {
    split: bool,
    fl: bool,
}

impl Sides {
    fn parse(args: &[String]) -> Result<Self> {
        let (split, fl) = match util::flag(args, "--only") {
            None => (true, true),
            Some("split") => (true, false),
            Some("fl") => (false, true),
            Some(other) => bail!("--only takes split or fl, not '{other}'"),
        };
        Ok(Self { split, fl })
    }
}

/// `<target>/reliability/<name>`, emptied: each run starts from nothing.
fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = util::target_dir().join("reliability").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
