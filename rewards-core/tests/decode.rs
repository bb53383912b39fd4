//! Table-driven tests of the transaction wire contract: every field and every
//! malformed case of TRANSACTION.md, as data in `data/transactions.json`.

use rewards_core::Transaction;
use serde_json::Value;

#[test]
fn every_case_in_the_table_decodes_as_expected() {
    let table: Vec<Value> =
        serde_json::from_str(include_str!("data/transactions.json")).expect("table is JSON");
    assert!(table.len() >= 80, "the table lost cases");
    let mut failures = Vec::new();
    for case in &table {
        let name = case["name"].as_str().expect("name");
        let input = case["input"].as_str().expect("input");
        let got = Transaction::from_json_str(input);
        match (&case["expect"], got) {
            (Value::String(s), Ok(tx)) if s == "ok" => {
                // Accepted input must survive the canonical encoding unchanged.
                let again = Transaction::from_json_str(&tx.to_json_string());
                if again.as_ref() != Ok(&tx) {
                    failures.push(format!(
                        "{name}: canonical form does not round-trip: {again:?}"
                    ));
                }
            }
            (Value::String(_), Err(e)) => failures.push(format!("{name}: expected ok, got {e}")),
            (Value::Object(want), Err(e)) => {
                let field = want["field"].as_str().expect("field");
                let contains = want["reason_contains"].as_str().expect("reason_contains");
                if e.field != field || !e.reason.contains(contains) {
                    failures.push(format!(
                        "{name}: expected {field}: ..{contains}.., got {}: {}",
                        e.field, e.reason
                    ));
                }
            }
            (expect, Ok(_)) => failures.push(format!("{name}: expected {expect}, got ok")),
            (expect, Err(e)) => failures.push(format!("{name}: bad expectation {expect}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_utf8_is_refused_with_a_reason() {
    let err = Transaction::from_json_bytes(b"{\"id\":\"tx-\xff\"}").unwrap_err();
    assert_eq!(err.field, "$");
    assert!(err.reason.contains("UTF-8"), "{err}");
}

#[test]
fn attribute_numbers_stay_exact() {
    let tx = Transaction::from_json_str(
        r#"{"id":"t","member":"m","kind":"purchase","amount":"1","currency":"USD","mcc":1,
            "time":"2026-01-01T00:00:00Z","attributes":{"score":0.1,"n":12345678901234567890}}"#,
    )
    .unwrap();
    let score = &tx.attributes["score"];
    assert_eq!(format!("{score:?}"), "Number(0.1)");
    let n = &tx.attributes["n"];
    assert_eq!(format!("{n:?}"), "Number(12345678901234567890)");
}

#[test]
fn same_id_different_content_has_a_different_fingerprint() {
    let a = Transaction::from_json_str(
        r#"{"id":"t","member":"m","kind":"purchase","amount":"1.00","currency":"USD","mcc":1,"time":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let b = Transaction::from_json_str(
        r#"{"id":"t","member":"m","kind":"purchase","amount":"1.01","currency":"USD","mcc":1,"time":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    // Formatting differences alone (spacing, field order, offset) do not change it.
    let a2 = Transaction::from_json_str(
        r#"{ "time":"2026-01-01T01:00:00+01:00","mcc":1,"currency":"USD","amount":"1.00","kind":"purchase","member":"m","id":"t" }"#,
    )
    .unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint(), a2.fingerprint());
}

#[test]
fn attribute_values_round_trip_through_serde_exactly() {
    use rewards_core::AttrValue;
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let values = vec![
        AttrValue::Text("12".into()),
        AttrValue::Text("true".into()),
        AttrValue::Bool(true),
        AttrValue::Number(Decimal::from_str("0.1").unwrap()),
        AttrValue::Number(Decimal::from_str("-12345678901234567890.5").unwrap()),
    ];
    let json = serde_json::to_string(&values).unwrap();
    assert_eq!(json, r#"["12","true",true,0.1,-12345678901234567890.5]"#);
    let back: Vec<AttrValue> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, values);
}
