//! `rwd`: the command-line tool for `.rwd` rulesets.
//!
//! Each subcommand lives in its own module with an `Args` struct (clap) and
//! a `run(args) -> ExitCode` function. To add one (`test`, `eval`,
//! `explain`, `replay`, `balance`, `history`): create `src/NAME.rs` with
//! those two items, declare `mod NAME;` below, and add one line to
//! [`Command`] and one arm to the `match` in `main`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod check;
mod files;
mod fmt;

/// Check, format and run loyalty rulesets written in the `.rwd` language.
#[derive(Debug, Parser)]
#[command(name = "rwd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and type-check rulesets; print every diagnostic.
    Check(check::Args),
    /// Format rulesets in place (with --check: only report).
    Fmt(fmt::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Fmt(args) => fmt::run(args),
    }
}
