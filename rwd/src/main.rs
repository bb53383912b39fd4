//! `rwd`: the command-line tool for `.rwd` rulesets.
//!
//! Each subcommand lives in its own module with an `Args` struct (clap) and
//! a `run(args) -> ExitCode` function. To add one (`test`, `eval`,
//! `explain`, `replay`, `balance`, `history`): create `src/NAME.rs` with
//! those two items, declare `mod NAME;` below, and add one line to
//! [`Command`] and one arm to the `match` in `main`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod balance;
mod check;
mod eval;
mod explain;
mod files;
mod fmt;
mod generate;
mod history;
mod replay;
mod ruleset;
mod run_tests;
mod state;

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
    /// Run a transaction file through a ruleset into a state folder (a backtest).
    Replay(replay::Args),
    /// Show a member's balances and tier from a replayed state folder.
    Balance(balance::Args),
    /// Show a member's postings from a replayed state folder.
    History(history::Args),
    /// Write a seeded day of realistic transactions as JSON lines.
    Generate(generate::Args),
    /// Run the `test` blocks of rulesets; print pass/fail and rule coverage.
    Test(run_tests::Args),
    /// Evaluate one transaction; print the outcome as JSON.
    Eval(eval::Args),
    /// Explain one transaction: why each rule matched or not, and the arithmetic.
    Explain(explain::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Balance(args) => balance::run(args),
        Command::History(args) => history::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Test(args) => run_tests::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Explain(args) => explain::run(args),
    }
}
