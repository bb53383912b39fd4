//! The batched write path's split statements: lots created by a unit are
//! inserted and lots it changed are updated (never one for the other), and
//! members are locked when they exist and inserted only when they do not —
//! across rounds and with several writers creating the same members.

#![allow(clippy::unwrap_used)]

mod postgres_support;

use std::sync::Arc;

use postgres_support::{PgTest, TestSchema};
use rewards_core::conformance::fixtures::{days, outcome, purchase, referring, year};
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::store::LedgerStore;
use rewards_core::{MemberId, Outcome, Transaction, TxId, TxKind};

fn id(s: &str) -> TxId {
    TxId::new(s).unwrap()
}

fn member(s: &str) -> MemberId {
    MemberId::new(s).unwrap()
}

fn earn(tx_id: &str, m: &MemberId, amount: &str, day: i64, points: i64) -> (Transaction, Outcome) {
    let t = purchase(&id(tx_id), m, amount, days(year(2094), day));
    let o = outcome(&t, &[("base", points)]);
    (t, o)
}

fn refund(
    tx_id: &str,
    m: &MemberId,
    amount: &str,
    day: i64,
    original: &str,
) -> (Transaction, Outcome) {
    let t = referring(
        TxKind::Refund,
        &id(tx_id),
        m,
        amount,
        days(year(2094), day),
        &id(original),
    );
    let o = outcome(&t, &[]);
    (t, o)
}

/// The lots table as (member, lot, status, granted, remaining), sorted.
async fn lots(t: &PgTest) -> Vec<(String, String, String, i64, i64)> {
    let client = t.schema.client().await;
    let s = t.schema.schema();
    client
        .query(
            &format!(
                "SELECT m.member_id, l.id, l.status, l.granted, l.remaining \
                 FROM {s}.lots l JOIN {s}.members m USING (member_key) ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// One unit changes a stored lot (a refund claws back from it), creates
/// lots (purchases), and changes a lot it created itself (a refund of a
/// purchase earlier in the unit): the same receipts, balances and history
/// as the in-memory store, every lot as the ledger left it, and a clean
/// reconciliation (balances == postings == lots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_updates_stored_lots_and_inserts_its_new_ones() {
    let t = PgTest::new().await;
    let memory = MemoryStore::new(LedgerConfig::default());
    let a = member("wp-a");
    let b = member("wp-b");
    let first = vec![earn("wp-p1", &a, "10.00", 0, 10)];
    let second = vec![
        refund("wp-r1", &a, "5.00", 1, "wp-p1"),
        earn("wp-p2", &a, "20.00", 1, 20),
        earn("wp-p3", &b, "8.00", 1, 8),
        refund("wp-r3", &b, "2.00", 2, "wp-p3"),
    ];
    for round in [&first, &second] {
        let pg = t.store.append_batch(round).await.unwrap();
        let mem = memory.append_batch(round).await.unwrap();
        assert_eq!(pg.len(), round.len());
        for (p, m) in pg.iter().zip(&mem) {
            assert_eq!(p.as_ref().unwrap(), m.as_ref().unwrap());
        }
    }
    for m in [&a, &b] {
        assert_eq!(
            t.store.balance(m).await.unwrap(),
            memory.balance(m).await.unwrap()
        );
        assert_eq!(
            t.store.history(m, 0, 100).await.unwrap(),
            memory.history(m, 0, 100).await.unwrap()
        );
    }
    let rows = lots(&t).await;
    let summary: Vec<(&str, &str, i64, i64)> = rows
        .iter()
        .map(|(m, l, _, g, r)| (m.as_str(), l.as_str(), *g, *r))
        .collect();
    assert_eq!(
        summary,
        [
            ("wp-a", "wp-p1", 10, 5),
            ("wp-a", "wp-p2", 20, 20),
            ("wp-b", "wp-p3", 8, 6),
        ]
    );
    let report = t.store.reconcile().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.members, 2);
}

/// Members created in one round are found (locked, not inserted again) in
/// the next, next to members new in that round; a refused request for a
/// new member leaves no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_created_in_one_round_is_found_in_the_next() {
    let t = PgTest::new().await;
    let (n, o, q, r) = (
        member("wp-n"),
        member("wp-o"),
        member("wp-q"),
        member("wp-r"),
    );
    let round1 = vec![
        earn("wp-n1", &n, "5.00", 0, 5),
        earn("wp-o1", &o, "3.00", 0, 3),
    ];
    let round2 = vec![
        earn("wp-q1", &q, "4.00", 1, 4),
        earn("wp-n2", &n, "6.00", 1, 6),
        // refused: its original does not exist
        refund("wp-r1", &r, "1.00", 1, "wp-none"),
        earn("wp-o2", &o, "7.00", 1, 7),
    ];
    let got1 = t.store.append_batch(&round1).await.unwrap();
    assert!(got1.iter().all(|r| r.as_ref().unwrap().version == 1));
    let got2 = t.store.append_batch(&round2).await.unwrap();
    let versions: Vec<Option<u64>> = got2
        .iter()
        .map(|r| r.as_ref().ok().map(|r| r.version))
        .collect();
    assert_eq!(versions, [Some(1), Some(2), None, Some(2)]);
    assert_eq!(
        t.store.balance(&n).await.unwrap().balances.available.get(),
        11
    );
    assert_eq!(
        t.store.balance(&o).await.unwrap().balances.available.get(),
        10
    );

    let client = t.schema.client().await;
    let s = t.schema.schema();
    let ids: Vec<String> = client
        .query(
            &format!("SELECT member_id FROM {s}.members ORDER BY member_id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["wp-n", "wp-o", "wp-q"]);
    assert!(t.store.reconcile().await.unwrap().is_clean());
}

/// Six stores (own pools) append batches that create the same new members
/// at once, in different orders: every transaction applies once, each
/// member gets one row and consecutive versions, and nothing drifts. (A
/// member another unit created between the lock and the insert makes the
/// unit run again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_creating_the_same_members_at_once_each_apply() {
    let schema = TestSchema::new();
    let first = PgTest::on(schema, LedgerConfig::default()).await;
    let mut stores = vec![first.store.clone()];
    for _ in 1..6 {
        let store = rewards_store::postgres::PgStore::connect(
            first.schema.config.clone(),
            LedgerConfig::default(),
        )
        .await
        .unwrap();
        stores.push(Arc::new(store));
    }
    let members: Vec<MemberId> = (0..12).map(|i| member(&format!("wp-c{i:02}"))).collect();
    let rounds = 5;
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let store = store.clone();
        let members = members.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                // each writer walks the members from another start
                let batch: Vec<(Transaction, Outcome)> = (0..members.len())
                    .map(|i| {
                        let m = &members[(i + w * 5 + round) % members.len()];
                        earn(&format!("wp-c-{w}-{round}-{i}"), m, "1.00", 0, 1)
                    })
                    .collect();
                for r in store.append_batch(&batch).await.unwrap() {
                    r.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let per_member = (stores.len() * rounds) as u64;
    for m in &members {
        let b = stores[0].balance(m).await.unwrap();
        assert_eq!(b.version, per_member, "{m}");
        assert_eq!(b.balances.available.get(), per_member as i64, "{m}");
    }
    let client = first.schema.client().await;
    let s = first.schema.schema();
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM {s}.members"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, members.len() as i64);
    let report = stores[0].reconcile().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    drop(stores);
}
