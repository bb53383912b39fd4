//! `rwd eval FILE --tx JSON [--member JSON]`: evaluates one transaction and
//! prints the outcome as JSON.

use crate::ruleset;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rwd eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ruleset.
    file: PathBuf,
    /// The transaction (wire format JSON, or @FILE).
    #[arg(long)]
    tx: String,
    /// The member's state (JSON, or @FILE): tier, enrolled, balance,
    /// attributes, counters {"NAME@WINDOW": "value"}.
    #[arg(long)]
    member: Option<String>,
    /// Answer a host function with a constant: `--host NAME=VALUE`.
    #[arg(long = "host", value_name = "NAME=VALUE")]
    hosts: Vec<String>,
}

/// Evaluates and prints the outcome.
pub fn run(args: Args) -> ExitCode {
    match outcome(
        &args.file,
        &args.tx,
        args.member.as_deref(),
        &args.hosts,
        false,
    ) {
        Ok(o) => match serde_json::to_string_pretty(&o) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Loads, reads the inputs and evaluates (with explain on request).
pub fn outcome(
    file: &std::path::Path,
    tx: &str,
    member: Option<&str>,
    hosts: &[String],
    explain: bool,
) -> Result<rewards_core::Outcome, String> {
    let loaded = ruleset::load(file, hosts)?;
    let tx = ruleset::transaction(tx)?;
    let view = ruleset::member(member)?;
    let result = if explain {
        loaded.plan.explain(&tx, &view)
    } else {
        loaded.plan.evaluate(&tx, &view)
    };
    result.map_err(|e| format!("{}: {e}", e.code()))
}
