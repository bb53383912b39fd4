//! `rwd test FILE...`: runs the `test` blocks of each file; prints pass/fail
//! per test and rule coverage; exits 1 if any test fails.

use crate::ruleset;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rwd test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `.rwd` files whose tests to run.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Answer a host function with a constant: `--host partner_airline=true`
    /// (other declared host functions answer false / 0 / "").
    #[arg(long = "host", value_name = "NAME=VALUE")]
    hosts: Vec<String>,
    /// Also fail when a rule is exercised by no test.
    #[arg(long)]
    require_coverage: bool,
}

/// Runs every file's tests.
pub fn run(args: Args) -> ExitCode {
    let mut failed = false;
    for path in &args.files {
        let loaded = match ruleset::load(path, &args.hosts) {
            Ok(l) => l,
            Err(message) => {
                eprintln!("error: {message}");
                failed = true;
                continue;
            }
        };
        let report = rewards_dsl::testing::run(&loaded.checked, &loaded.plan, &loaded.source);
        print!("{}", report.render(&path.display().to_string()));
        if !report.passed() || (args.require_coverage && !report.uncovered().is_empty()) {
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
