//! `rwd balance MEMBER... [--state DIR] [--json]`: members' balances and
//! tier, read from a state folder written by `rwd replay` (the memory state
//! is rebuilt from its event log, once for all the members asked for). A
//! member never seen is "not found", exit 1.

use rewards_core::{ErrorKind, LedgerStore};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::state;

/// Arguments of `rwd balance`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The member ids.
    #[arg(required = true, value_name = "MEMBER")]
    members: Vec<String>,
    /// The state folder written by `rwd replay`.
    #[arg(long, value_name = "DIR", default_value = "state")]
    state: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints each member's balances; exit 1 when one is not found.
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
    let members = args
        .members
        .iter()
        .map(|m| state::member_id(m))
        .collect::<Result<Vec<_>, _>>()?;
    let store = state::open_read_only(&args.state)?;
    let mut code = ExitCode::SUCCESS;
    for (i, member) in members.iter().enumerate() {
        let balance = match state::block_on(store.balance(member))? {
            Ok(balance) => balance,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                eprintln!(
                    "not found: member {member} has no entry in {}",
                    args.state.display()
                );
                code = ExitCode::FAILURE;
                continue;
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
            if i > 0 {
                println!();
            }
            println!("member     {}", balance.member);
            println!("available  {}", balance.balances.available);
            println!("pending    {}", balance.balances.pending);
            println!("tier       {}", balance.tier.as_deref().unwrap_or("-"));
            println!("entries    {}", balance.version);
        }
    }
    Ok(code)
}
