//! `rwd explain FILE --tx JSON [--member JSON]`: why each rule matched or
//! not, each component's arithmetic, the caps and budgets that trimmed it.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rwd explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ruleset.
    file: PathBuf,
    /// The transaction (wire format JSON, or @FILE).
    #[arg(long)]
    tx: String,
    /// The member's state (JSON, or @FILE), as for `rwd eval`.
    #[arg(long)]
    member: Option<String>,
    /// Answer a host function with a constant: `--host NAME=VALUE`.
    #[arg(long = "host", value_name = "NAME=VALUE")]
    hosts: Vec<String>,
}

/// Explains one transaction.
pub fn run(args: Args) -> ExitCode {
    match crate::eval::outcome(
        &args.file,
        &args.tx,
        args.member.as_deref(),
        &args.hosts,
        true,
    ) {
        Ok(o) => {
            print!("{}", rewards_dsl::explain::render(&o));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
