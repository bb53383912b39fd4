//! `rwd history MEMBER [--state DIR] [--limit N] [--json]`: a member's
//! postings (the newest `N`, oldest first), each with the ruleset id,
//! version and content hash behind it, read from a state folder written by
//! `rwd replay`. A member never seen is "not found", exit 1.

use rewards_core::ledger::Posting;
use rewards_core::store::MAX_PAGE_ROWS;
use rewards_core::{ErrorKind, LedgerStore, MemberId, RulesetStamp};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::state;

/// Arguments of `rwd history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The member id.
    member: String,
    /// The state folder written by `rwd replay`.
    #[arg(long, value_name = "DIR", default_value = "state")]
    state: PathBuf,
    /// How many postings, the newest (0: all).
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    /// Print one JSON object per posting instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the member's postings; exit 1 when not found.
pub fn run(args: Args) -> ExitCode {
    match history(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn history(args: &Args) -> Result<ExitCode, String> {
    let member = state::member_id(&args.member)?;
    let store = state::open_read_only(&args.state)?;
    let postings = match state::block_on(last_postings(&store, &member, args.limit))? {
        Ok(postings) => postings,
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
        for p in &postings {
            let value = serde_json::to_string(p).map_err(|e| e.to_string())?;
            println!("{value}");
        }
    } else {
        print_table(&member, &postings);
    }
    Ok(ExitCode::SUCCESS)
}

/// The newest `limit` postings (all when 0), oldest first.
async fn last_postings(
    store: &impl LedgerStore,
    member: &MemberId,
    limit: usize,
) -> rewards_core::error::Result<Vec<Posting>> {
    let mut kept: VecDeque<Posting> = VecDeque::new();
    let mut after = 0u64;
    loop {
        let page = store.history(member, after, MAX_PAGE_ROWS).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        let full = page.len() == MAX_PAGE_ROWS;
        kept.extend(page);
        if limit > 0 {
            while kept.len() > limit {
                kept.pop_front();
            }
        }
        if !full {
            break;
        }
    }
    if kept.is_empty() {
        // A member with entries but no posting yet (a tier review, a
        // transaction that earned nothing) is still a member.
        store.balance(member).await?;
    }
    Ok(kept.into())
}

fn stamp_text(stamp: Option<&RulesetStamp>) -> String {
    match stamp {
        Some(s) => format!("{} v{} {}", s.id, s.version, short_hash(&s.hash)),
        None => "-".into(),
    }
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn print_table(member: &MemberId, postings: &[Posting]) {
    println!(
        "{:>6}  {:<24}  {:<8}  {:<16}  {:>9}  {:>9}  {:>10}  {:>10}  {:<20}  ruleset",
        "seq",
        "time",
        "kind",
        "rule",
        "available",
        "pending",
        "avail.after",
        "pend.after",
        "source"
    );
    let mut stamps: Vec<&RulesetStamp> = Vec::new();
    for p in postings {
        println!(
            "{:>6}  {:<24}  {:<8}  {:<16}  {:>+9}  {:>+9}  {:>10}  {:>10}  {:<20}  {}",
            p.seq,
            p.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            p.kind.as_str(),
            &*p.rule,
            p.delta.available.get(),
            p.delta.pending.get(),
            p.after.available.get(),
            p.after.pending.get(),
            p.source.as_str(),
            stamp_text(p.ruleset.as_ref())
        );
        if let Some(s) = &p.ruleset {
            if !stamps.contains(&s) {
                stamps.push(s);
            }
        }
    }
    println!("{} postings of member {member}", postings.len());
    for s in stamps {
        println!("ruleset {} v{}: hash {}", s.id, s.version, s.hash);
    }
}
