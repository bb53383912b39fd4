//! `rwd generate --seed N --transactions N [--members N] [--day DATE]`:
//! writes a seeded, realistic day of transactions as JSON lines to stdout
//! (purchases over a merchant-category mix, Zipf-like member activity,
//! refunds, authorizations with their settlements and reversals). The same
//! arguments give the same file, byte for byte.

use chrono::NaiveDate;
use rewards_core::generate::{Generator, GeneratorConfig};
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

/// Arguments of `rwd generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The seed.
    #[arg(long, value_name = "N")]
    seed: u64,
    /// How many transactions.
    #[arg(long, value_name = "N")]
    transactions: usize,
    /// How many members (default: one per ten transactions, at least one).
    #[arg(long, value_name = "N")]
    members: Option<usize>,
    /// The UTC day the transactions are spread over (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    day: Option<NaiveDate>,
}

/// Writes the stream; exit 1 if it cannot be written.
pub fn run(args: Args) -> ExitCode {
    let mut config = GeneratorConfig {
        seed: args.seed,
        transactions: args.transactions,
        members: args.members.unwrap_or(args.transactions / 10).max(1),
        ..GeneratorConfig::default()
    };
    if let Some(day) = args.day {
        config.day = day;
    }
    let generator = match Generator::new(config) {
        Ok(generator) => generator,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = generator.lines().try_for_each(|line| {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    });
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // `rwd generate | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}
