//! The malformed-input corpus (`data/malformed.jsonl`, described in
//! `docs/malformed-input.md`) checked against the wire decoder.
//!
//! Each line is one message as a producer might send it, with what the
//! pipeline must do with it: `accepted`, or `dead_letter` at a `stage`
//! (`decode` here; `ledger` and `program` cases must decode, because they
//! are refused later, and the ledger's idempotency check is run on the
//! duplicate-id cases). The pipeline engineer can feed the same file
//! through a whole pipeline.

use std::collections::{BTreeMap, BTreeSet};

use rewards_core::ledger::{check_inbox, Balances, EntryKind, InboxEntry, Receipt};
use rewards_core::{ErrorKind, Transaction};
use serde_json::Value;

const CORPUS: &str = include_str!("data/malformed.jsonl");

/// One case of the corpus.
struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: String,
    stage: String,
    field: String,
    reason_contains: String,
    same_id_as: Option<String>,
    same_content: bool,
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes().filter(|&b| b != b'=') {
        let value = ALPHABET
            .iter()
            .position(|&a| a == byte)
            .unwrap_or_else(|| panic!("{byte:#04x} is not base64"));
        acc = (acc << 6) | u32::try_from(value).expect("below 64");
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("one byte"));
        }
    }
    out
}

fn text_of<'a>(case: &'a Value, key: &str) -> Option<&'a str> {
    case.get(key).and_then(Value::as_str)
}

fn load() -> Vec<Case> {
    CORPUS
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let case: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("malformed.jsonl:{}: not JSON: {e}", i + 1));
            let name = text_of(&case, "name").expect("name").to_string();
            let raw = text_of(&case, "raw").expect("raw");
            let bytes = match text_of(&case, "encoding") {
                None => raw.as_bytes().to_vec(),
                Some("base64") => base64_decode(raw),
                Some(other) => panic!("{name}: unknown encoding {other}"),
            };
            Case {
                bytes,
                expect: text_of(&case, "expect").expect("expect").to_string(),
                stage: text_of(&case, "stage").unwrap_or("").to_string(),
                field: text_of(&case, "field").unwrap_or("").to_string(),
                reason_contains: text_of(&case, "reason_contains").unwrap_or("").to_string(),
                same_id_as: text_of(&case, "same_id_as").map(str::to_string),
                same_content: case.get("same_content") == Some(&Value::Bool(true)),
                name,
            }
        })
        .collect()
}

/// The inbox row the ledger would hold after applying `tx`.
fn inbox_row(tx: &Transaction) -> InboxEntry {
    InboxEntry {
        id: tx.id.clone(),
        member: tx.member.clone(),
        fingerprint: tx.fingerprint(),
        receipt: Receipt {
            id: tx.id.clone(),
            member: tx.member.clone(),
            kind: EntryKind::Purchase,
            version: 1,
            delta: Balances::default(),
            balances: Balances::default(),
            awards: Vec::new(),
            trimmed: rewards_core::Points(0),
            tier: None,
            duplicate: false,
        },
    }
}

/// Checks one case; `decoded` holds the transactions of earlier cases.
fn check(case: &Case, decoded: &BTreeMap<String, Transaction>) -> Result<(), String> {
    let got = Transaction::from_json_bytes(&case.bytes);
    match (case.expect.as_str(), case.stage.as_str(), &got) {
        ("accepted", _, Ok(tx)) => {
            let again = Transaction::from_json_str(&tx.to_json_string())
                .map_err(|e| format!("canonical form does not decode: {e}"))?;
            if &again != tx || again.fingerprint() != tx.fingerprint() {
                return Err(format!("canonical form changed it: {again:?}"));
            }
        }
        ("accepted", _, Err(e)) => return Err(format!("expected accepted, got {e}")),
        ("dead_letter", "decode", Err(e)) => {
            if e.field != case.field || !e.reason.contains(&case.reason_contains) {
                return Err(format!(
                    "expected {}: ..{}.., got {}: {}",
                    case.field, case.reason_contains, e.field, e.reason
                ));
            }
        }
        ("dead_letter", "decode", Ok(tx)) => {
            return Err(format!("expected a decode error, got {tx:?}"))
        }
        // Refused after decoding: the decoder must let it through.
        ("dead_letter", "ledger" | "program", Ok(_)) => {}
        ("dead_letter", "ledger" | "program", Err(e)) => {
            return Err(format!("must decode (refused later), got {e}"))
        }
        (expect, stage, _) => return Err(format!("bad expectation {expect}/{stage}")),
    }
    let Some(first_name) = &case.same_id_as else {
        return Ok(());
    };
    let first = decoded
        .get(first_name)
        .ok_or_else(|| format!("same_id_as names no earlier accepted case: {first_name}"))?;
    let tx = got.map_err(|e| e.to_string())?;
    if tx.id != first.id {
        return Err(format!("id {} is not the id of {first_name}", tx.id));
    }
    let verdict = check_inbox(Some(&inbox_row(first)), &tx.fingerprint());
    match (case.same_content, verdict) {
        (true, Ok(Some(receipt))) if receipt.duplicate => Ok(()),
        (false, Err(e)) if e.kind() == ErrorKind::Conflict => {
            if e.to_string().contains(&case.reason_contains) {
                Ok(())
            } else {
                Err(format!("conflict without `{}`: {e}", case.reason_contains))
            }
        }
        (same, verdict) => Err(format!(
            "same content {same}: the inbox check said {verdict:?}"
        )),
    }
}

#[test]
fn every_malformed_case_gets_its_expected_verdict() {
    let cases = load();
    assert!(cases.len() >= 120, "the corpus lost cases: {}", cases.len());
    let mut decoded = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(why) = check(case, &decoded) {
            failures.push(format!("{}: {why}", case.name));
        }
        if let Ok(tx) = Transaction::from_json_bytes(&case.bytes) {
            decoded.insert(case.name.clone(), tx);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_corpus_is_well_formed_and_covers_every_category() {
    let cases = load();
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    for case in &cases {
        assert!(
            matches!(case.expect.as_str(), "accepted" | "dead_letter"),
            "{}: expect is {}",
            case.name,
            case.expect
        );
        if case.expect == "dead_letter" {
            assert!(
                !case.reason_contains.is_empty(),
                "{}: a dead letter needs reason_contains",
                case.name
            );
        }
    }
    // The categories of issue 9; each must keep at least one refused case.
    let categories = [
        "is a",
        "missing",
        "above the limit",
        "negative",
        "currency",
        "offset",
        "duplicate",
        "over 64 KiB",
        "invalid UTF-8",
        "nested",
        "characters",
        "NUL",
        "byte order mark",
        "exponent",
    ];
    for category in categories {
        assert!(
            cases
                .iter()
                .any(|c| c.expect == "dead_letter" && c.name.contains(category)),
            "no refused case for `{category}`"
        );
    }
    let base64 = cases
        .iter()
        .filter(|c| std::str::from_utf8(&c.bytes).is_err());
    assert!(base64.count() >= 4, "invalid UTF-8 cases went missing");
    let biggest = cases.iter().map(|c| c.bytes.len()).max().unwrap_or(0);
    assert!(
        biggest > rewards_core::limits::MAX_TX_BYTES,
        "no oversized message"
    );
}

#[test]
fn base64_decoder_reads_padding_and_all_bytes() {
    assert_eq!(base64_decode("/w=="), vec![0xff]);
    assert_eq!(base64_decode("AAEC"), vec![0, 1, 2]);
    assert_eq!(base64_decode("aGk="), b"hi".to_vec());
}
