//! `rwd balance MEMBER [--state DIR] [--json]`: a member's balances and tier,
//! read from a state folder written by `rwd replay` (the memory state is
//! rebuilt from its event log). A member never seen is "not found", exit 1.

use rewards_core::{ErrorKind, LedgerStore};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::state;

/// Arguments of `rwd balance`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The member id.
    member: String,
    /// The state folder written by `rwd replay`.
    #[arg(long, value_name = "DIR", default_value = "state")]
    state: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints the member's balances; exit 1 when not found.
pub fn run(args: Args) -> ExitCode {
    match balance(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn balance(args: &Args) -> Result<ExitCode, String> {
    let member = state::member_id(&args.member)?;
    let store = state::open_read_only(&args.state)?;
    let result = state::block_on(store.balance(&member))?;
    let balance = match result {
        Ok(balance) => balance,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!(
                "not found: member {member} has no entry in {}",
                args.state.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.to_string()),
    };
    if args.json {
        let value = serde_json::json!({
            "member": balance.member.as_str(),
            "available": balance.balances.available.get(),
            "pending": balance.balances.pending.get(),
            "tier": balance.tier.as_deref(),
            "version": balance.version,
        });
        println!("{value}");
    } else {
        println!("member     {}", balance.member);
        println!("available  {}", balance.balances.available);
        println!("pending    {}", balance.balances.pending);
        println!("tier       {}", balance.tier.as_deref().unwrap_or("-"));
        println!("entries    {}", balance.version);
    }
    Ok(ExitCode::SUCCESS)
}
