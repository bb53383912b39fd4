//! Migration 5 (compact rows): records and audit events name their ruleset
//! by key, outbox rows point at their audit event. Rows written before it —
//! a stamp inside the JSON, an outbox row holding the whole event — must
//! still read the same: nothing is rewritten by the migration.

mod postgres_support;

use postgres_support::PgTest;
use rewards_core::conformance::fixtures::{days, outcome, purchase, referring, stamp, year};
use rewards_core::ledger::PostingKind;
use rewards_core::store::LedgerStore;
use rewards_core::{MemberId, TxId, TxKind};

/// The new form keeps each document once: no stamp in the record or event
/// JSON, and an outbox row without a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_name_the_ruleset_by_key_and_the_outbox_points_at_the_event() {
    let t = PgTest::new().await;
    let m = MemberId::new("compact-m").unwrap();
    let p = purchase(&TxId::new("compact-p").unwrap(), &m, "10.00", year(2095));
    t.store
        .append(&p, &outcome(&p, &[("base", 10)]))
        .await
        .unwrap();
    let client = t.schema.client().await;
    let s = t.schema.schema();
    let row = client
        .query_one(
            &format!(
                "SELECT i.record, i.ruleset_key, e.body, e.ruleset_key, o.body, o.event_seq \
                 FROM {s}.inbox i, {s}.events e, {s}.outbox o"
            ),
            &[],
        )
        .await
        .unwrap();
    let (record, record_key): (String, Option<i32>) = (row.get(0), row.get(1));
    let (event, event_key): (String, Option<i32>) = (row.get(2), row.get(3));
    let (outbox_body, event_seq): (Option<String>, Option<i64>) = (row.get(4), row.get(5));
    assert!(!record.contains(&*stamp().hash), "{record}");
    assert!(!event.contains(&*stamp().hash), "{event}");
    assert!(record_key.is_some() && record_key == event_key);
    assert_eq!((outbox_body, event_seq), (None, Some(1)));
}

/// Rows in the form written before migration 5 read as they did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_the_migration_read_the_same() {
    let t = PgTest::new().await;
    let m = MemberId::new("legacy-m").unwrap();
    let p = purchase(&TxId::new("legacy-p").unwrap(), &m, "10.00", year(2096));
    t.store
        .append(&p, &outcome(&p, &[("base", 6), ("bonus", 4)]))
        .await
        .unwrap();
    let events = t.store.outbox_fetch(10).await.unwrap();
    let audit = t.store.audit(&m, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].ruleset.as_ref(), Some(&stamp()));

    // Rewrite the rows into the old form: the stamp back in the JSON, no
    // keys, the outbox row holding the event itself.
    let client = t.schema.client().await;
    let s = t.schema.schema();
    let stamp_json = serde_json::to_value(stamp()).unwrap();
    let mut legacy_event = serde_json::to_value(&events[0]).unwrap();
    legacy_event["seq"] = 0.into();
    let n = client
        .execute(
            &format!(
                "UPDATE {s}.inbox SET ruleset_key = NULL, \
                        record = jsonb_set(record::jsonb, '{{ruleset}}', $1::jsonb)::text"
            ),
            &[&stamp_json],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    client
        .execute(
            &format!(
                "UPDATE {s}.events SET ruleset_key = NULL, tier = NULL, posting_seq = NULL, \
                        posting_count = NULL, \
                        body = jsonb_set(body::jsonb, '{{ruleset}}', $1::jsonb)::text"
            ),
            &[&stamp_json],
        )
        .await
        .unwrap();
    client
        .execute(
            &format!(
                "UPDATE {s}.outbox SET member_key = NULL, event_seq = NULL, body = $1::jsonb::text"
            ),
            &[&legacy_event],
        )
        .await
        .unwrap();

    assert_eq!(t.store.outbox_fetch(10).await.unwrap(), events);
    assert_eq!(t.store.audit(&m, 0, 10).await.unwrap(), audit);
    // The record's stamp (from its JSON) stamps the refund's clawbacks.
    let r = referring(
        TxKind::Refund,
        &TxId::new("legacy-r").unwrap(),
        &m,
        "5.00",
        days(year(2096), 1),
        &p.id,
    );
    t.store.append(&r, &outcome(&r, &[])).await.unwrap();
    let history = t.store.history(&m, 2, 10).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history
        .iter()
        .all(|p| p.kind == PostingKind::Clawback && p.ruleset == Some(stamp())));
    let after = t.store.outbox_fetch(10).await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], events[0]);
    assert_eq!(after[1].ruleset, Some(stamp()));
}
