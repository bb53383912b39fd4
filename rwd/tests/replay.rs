//! `rwd replay`, `rwd balance`, `rwd history` and `rwd generate`, run as the
//! built binary on temporary state folders, checked against an independent
//! in-process computation (`Plan` + a fresh `MemoryStore`).

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::{Evaluator, LedgerStore, MemberId, Transaction};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const CASHBACK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/rules/cashback.rwd"
);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn rwd(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_rwd"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `rwd generate` into `dir/name`.
fn generate(dir: &Path, name: &str, seed: u64, transactions: usize, members: usize) -> PathBuf {
    let path = dir.join(name);
    let run = rwd(&[
        "generate",
        "--seed",
        &seed.to_string(),
        "--transactions",
        &transactions.to_string(),
        "--members",
        &members.to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::write(&path, &run.stdout).unwrap();
    path
}

fn replay(rules: &str, input: &Path, state: &Path) -> Run {
    rwd(&[
        "replay",
        "--rules",
        rules,
        "--input",
        input.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--progress",
        "plain",
    ])
}

/// The summary's `name value` rows (`transactions read 3000`,
/// `ledger/invalid_reference 3`, ...).
fn summary(stdout: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("  ")) {
        let line = line.trim();
        if let Some((name, value)) = line.rsplit_once(char::is_whitespace) {
            let value = if value == "s" || value == "tx/s" {
                let (name, number) = name.trim().rsplit_once(char::is_whitespace).unwrap();
                rows.insert(name.trim().to_string(), number.to_string());
                continue;
            } else {
                value
            };
            rows.insert(name.trim().to_string(), value.to_string());
        }
    }
    rows
}

fn count(rows: &BTreeMap<String, String>, name: &str) -> u64 {
    rows.get(name)
        .unwrap_or_else(|| panic!("no {name:?} in {rows:?}"))
        .parse()
        .unwrap()
}

fn members_of(input: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(input)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["member"].as_str().map(str::to_string))
        .collect()
}

/// The independent computation: every line decoded, evaluated by the
/// compiled plan against the member's view and appended, one by one in
/// file order, to a fresh in-memory store without an event log.
async fn reference(rules: &str, input: &Path) -> MemoryStore {
    let source = std::fs::read_to_string(rules).unwrap();
    let plan = rewards_dsl::compile_source(&source, &rewards_dsl::HostFunctions::new()).unwrap();
    // The seam the pipeline calls.
    let plan: &dyn Evaluator = &plan;
    let store = MemoryStore::new(LedgerConfig::default());
    let mut keys = Vec::new();
    for line in std::fs::read_to_string(input).unwrap().lines() {
        let Ok(tx) = Transaction::from_json_bytes(line.as_bytes()) else {
            continue;
        };
        keys.clear();
        plan.counter_keys(&tx, &mut keys);
        let view = store.member_view(&tx.member, &keys).await.unwrap();
        let Ok(outcome) = plan.evaluate(&tx, &view) else {
            continue;
        };
        let _refused_or_applied = store.append(&tx, &outcome).await;
    }
    store
}

#[test]
fn replay_then_balance_and_history_then_replay_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "day.jsonl", 11, 3000, 250);
    let state = dir.path().join("state");

    let first = replay(CASHBACK, &input, &state);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let rows = summary(&first.stdout);
    assert_eq!(count(&rows, "transactions read"), 3000);
    let accepted = count(&rows, "accepted");
    assert_eq!(accepted + count(&rows, "dead-lettered"), 3000);
    assert!(accepted > 2900, "{}", first.stdout);
    assert_eq!(count(&rows, "duplicates"), 0);
    assert!(count(&rows, "points issued") > 0);
    assert!(count(&rows, "points clawed back") > 0, "refunds claw back");
    assert_eq!(
        count(&rows, "members") as usize,
        members_of(&input).len(),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("drift 0"),
        "reconciliation: {}",
        first.stdout
    );
    assert!(first.stderr.contains("progress: "), "{}", first.stderr);

    // The busiest member (Zipf rank 1) has a balance and postings.
    let log = state.join("events.jsonl");
    let balance = rwd(&["balance", "m-000001", "--state", state.to_str().unwrap()]);
    assert_eq!(balance.code, 0, "{}", balance.stderr);
    assert!(balance.stdout.contains("member     m-000001"));
    let pending: i64 = balance
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("pending"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pending > 0, "cashback points are pending 2 days");

    let history = rwd(&[
        "history",
        "m-000001",
        "--state",
        state.to_str().unwrap(),
        "--limit",
        "7",
    ]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert!(history.stdout.contains("7 postings of member m-000001"));
    assert!(history.stdout.contains("acme-cashback v3 "));
    assert!(history
        .stdout
        .lines()
        .any(|l| l.starts_with("ruleset acme-cashback v3: hash ") && l.len() == 64 + 31));

    // Same file again: all duplicates, not a byte added to the event log.
    let log_len = std::fs::metadata(&log).unwrap().len();
    let second = replay(CASHBACK, &input, &state);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    let again = summary(&second.stdout);
    assert_eq!(count(&again, "transactions read"), 3000);
    assert_eq!(count(&again, "accepted"), 0);
    assert_eq!(count(&again, "duplicates"), accepted);
    assert_eq!(count(&again, "points issued"), 0);
    assert_eq!(count(&again, "members"), count(&rows, "members"));
    assert!(second.stderr.contains("rebuilt "), "{}", second.stderr);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), log_len);
    let balance_again = rwd(&["balance", "m-000001", "--state", state.to_str().unwrap()]);
    assert_eq!(balance_again.stdout, balance.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_state_matches_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "day.jsonl", 5, 2500, 150);
    let state = dir.path().join("state");
    let run = replay(CASHBACK, &input, &state);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    // Another process rebuilds memory from the event log.
    let members: Vec<String> = members_of(&input).into_iter().collect();
    let mut args = vec!["balance", "--json", "--state", state.to_str().unwrap()];
    args.extend(members.iter().map(String::as_str));
    let balances = rwd(&args);
    assert_eq!(balances.code, 0, "{}", balances.stderr);
    let rebuilt: Vec<Value> = balances
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rebuilt.len(), members.len());

    let expected = reference(CASHBACK, &input).await;
    let mut total = 0i64;
    for got in &rebuilt {
        let member = MemberId::new(got["member"].as_str().unwrap()).unwrap();
        let want = expected.balance(&member).await.unwrap();
        assert_eq!(
            got["available"].as_i64(),
            Some(want.balances.available.get()),
            "{member}"
        );
        assert_eq!(
            got["pending"].as_i64(),
            Some(want.balances.pending.get()),
            "{member}"
        );
        assert_eq!(got["version"].as_u64(), Some(want.version), "{member}");
        assert_eq!(got["tier"].as_str(), want.tier.as_deref(), "{member}");
        total += want.balances.pending.get() + want.balances.available.get();
    }
    assert!(total > 10_000, "the day earned points: {total}");

    // The busiest member's postings, one by one, ids and stamps included.
    let history = rwd(&[
        "history",
        "m-000001",
        "--json",
        "--limit",
        "0",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    let got: Vec<Value> = history
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let member = MemberId::new("m-000001").unwrap();
    let mut want: Vec<Value> = Vec::new();
    loop {
        let page = expected
            .history(&member, want.len() as u64, 1000)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        want.extend(page.iter().map(|p| serde_json::to_value(p).unwrap()));
    }
    assert!(want.len() > 50, "{}", want.len());
    assert_eq!(got, want);
}

#[test]
fn malformed_lines_go_to_the_dead_letters_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = |id: &str, member: &str| {
        format!(
            r#"{{"id":"{id}","member":"{member}","kind":"purchase","amount":"25.00","currency":"USD","time":"2026-05-02T10:00:00Z","mcc":5411}}"#
        )
    };
    let lines = [
        good("t-1", "m-a"),
        "{this is not json".to_string(),
        good("t-2", "m-b"),
        r#"{"id":"t-3","member":"m-a","kind":"purchase","amount":25.5,"currency":"USD","time":"2026-05-02T10:00:00Z"}"#.to_string(),
        r#"{"id":"t-4","member":"m-a","kind":"refund","original_id":"t-nowhere","amount":"5.00","currency":"USD","time":"2026-05-02T11:00:00Z","mcc":5411}"#.to_string(),
        String::new(),
        good("t-5", "m-a"),
    ];
    let input = dir.path().join("mixed.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let state = dir.path().join("state");

    let run = replay(CASHBACK, &input, &state);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let rows = summary(&run.stdout);
    assert_eq!(count(&rows, "transactions read"), 6, "{}", run.stdout);
    assert_eq!(count(&rows, "accepted"), 3);
    assert_eq!(count(&rows, "dead-lettered"), 3);
    assert_eq!(count(&rows, "decode/decode"), 2);
    assert_eq!(count(&rows, "ledger/invalid_reference"), 1);
    // 1% of 25.00 (25 points of a cent) three times; nothing clawed back.
    assert_eq!(count(&rows, "points issued"), 3 * 25);
    assert_eq!(count(&rows, "points clawed back"), 0);

    let letters: Vec<Value> = std::fs::read_to_string(state.join("dead-letters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 3);
    let by_line = |n: u64| {
        letters
            .iter()
            .find(|l| l["origin"].as_str().unwrap().ends_with(&format!(":{n}")))
            .unwrap_or_else(|| panic!("no letter for line {n}: {letters:?}"))
    };
    let bad_json = by_line(2);
    assert_eq!(bad_json["reason"]["stage"], "decode");
    assert_eq!(bad_json["payload"], "{this is not json");
    let float = by_line(4);
    assert_eq!(float["reason"]["stage"], "decode");
    assert_eq!(float["reason"]["field"], "amount");
    let refund = by_line(5);
    assert_eq!(refund["reason"]["stage"], "ledger");
    assert_eq!(refund["reason"]["code"], "invalid_reference");
    assert!(
        refund["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("t-nowhere"),
        "{refund}"
    );
}

#[test]
fn a_member_never_seen_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "day.jsonl", 3, 200, 20);
    let state = dir.path().join("state");
    let run = replay(CASHBACK, &input, &state);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let st = state.to_str().unwrap();

    let balance = rwd(&["balance", "m-nobody", "--state", st]);
    assert_eq!(balance.code, 1);
    assert!(
        balance.stderr.contains("not found: member m-nobody"),
        "{}",
        balance.stderr
    );
    assert!(balance.stdout.is_empty());
    let history = rwd(&["history", "m-nobody", "--state", st]);
    assert_eq!(history.code, 1);
    assert!(history.stderr.contains("not found: member m-nobody"));

    // A folder without state is an error naming the fix, not an empty answer.
    let empty = dir.path().join("empty");
    let none = rwd(&["balance", "m-000001", "--state", empty.to_str().unwrap()]);
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("rwd replay"), "{}", none.stderr);
    assert!(!empty.exists(), "a read never creates state");
}

#[test]
fn a_ruleset_that_does_not_check_is_refused_before_any_state_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "day.jsonl", 3, 50, 5);
    let rules = dir.path().join("bad.rwd");
    let text = std::fs::read_to_string(CASHBACK).unwrap().replace(
        "earn tx.amount points",
        "earn tx.amount + member.nope points",
    );
    std::fs::write(&rules, text).unwrap();
    let state = dir.path().join("state");
    let run = replay(rules.to_str().unwrap(), &input, &state);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("error"), "{}", run.stderr);
    assert!(run.stderr.contains("does not compile"), "{}", run.stderr);
    assert!(!state.exists());
}

#[test]
fn generate_is_seeded() {
    let a = rwd(&["generate", "--seed", "9", "--transactions", "500"]);
    let b = rwd(&["generate", "--seed", "9", "--transactions", "500"]);
    let c = rwd(&["generate", "--seed", "10", "--transactions", "500"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(a.stdout.lines().count(), 500);
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    for line in a.stdout.lines() {
        Transaction::from_json_bytes(line.as_bytes()).unwrap();
    }
    // The default member count is one per ten transactions.
    let members: BTreeSet<&str> = a
        .stdout
        .lines()
        .map(|l| {
            l.split("\"member\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert!(
        members.len() <= 50 && members.len() > 10,
        "{}",
        members.len()
    );
}
