use super::*;

const GOOD: &str = r#"{"id":"tx-000862","member":"m-0190","kind":"refund","amount":"16.48",
 "currency":"USD","mcc":5814,"merchant":"Slice Express #4780",
 "channel":"card","presence":"in_store","time":"2026-09-20T12:35:18Z",
 "original_id":"tx-000049"}"#;

#[test]
fn decodes_the_contract_example() {
    let tx = Transaction::from_json_str(GOOD).unwrap();
    assert_eq!(tx.kind, TxKind::Refund);
    assert_eq!(tx.amount.amount.to_string(), "16.48");
    assert_eq!(tx.mcc, Some(5814));
    assert_eq!(tx.presence, Some(Presence::InStore));
    assert_eq!(tx.original_id.unwrap().as_str(), "tx-000049");
}

#[test]
fn round_trips_through_the_canonical_form() {
    let tx = Transaction::from_json_str(GOOD).unwrap();
    let again = Transaction::from_json_str(&tx.to_json_string()).unwrap();
    assert_eq!(tx, again);
    assert_eq!(tx.fingerprint(), again.fingerprint());
}
