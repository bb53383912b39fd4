//! Exactness under concurrent writers: several stores (separate pools, as
//! separate processes would have) drawing on one campaign budget, and the
//! same request id appended at once from many connections.

mod postgres_support;

use std::sync::Arc;

use postgres_support::{PgTest, TestSchema};
use rewards_core::conformance::fixtures::*;
use rewards_core::error::ErrorKind;
use rewards_core::ledger::LedgerConfig;
use rewards_core::store::LedgerStore;
use rewards_core::Points;
use rewards_store::postgres::PgStore;

/// `n` independent stores on one schema: each has its own pool, so their
/// units run on separate connections like separate processes.
async fn stores(schema: &TestSchema, n: usize) -> Vec<Arc<PgStore>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut config = schema.config.clone();
        config.pool_size = 2;
        out.push(Arc::new(
            PgStore::connect(config, LedgerConfig::default())
                .await
                .expect("connect"),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_is_never_exceeded_by_concurrent_writers() {
    let schema = TestSchema::new();
    let stores = stores(&schema, 6).await;
    let s = Scope::new("budget");
    let budget = s.name("promo");
    let limit = 1_000;
    let t0 = year(2090);
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let store = store.clone();
        let s = s.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut granted = 0i64;
            // Half the workers append one by one, half in batches.
            if w % 2 == 0 {
                for i in 0..40 {
                    let m = s.member(&format!("m{w}-{}", i % 5));
                    let p = purchase(&s.id(&format!("p{w}-{i}")), &m, "7.00", t0);
                    let o =
                        with_budget(outcome(&p, &[("base", 1), ("promo", 7)]), &budget, 1, limit);
                    let r = store.append(&p, &o).await.expect("append");
                    granted += promo_points(&r);
                }
            } else {
                for b in 0..4 {
                    let items: Vec<_> = (0..10)
                        .map(|i| {
                            let m = s.member(&format!("m{w}-{}", i % 5));
                            let p = purchase(&s.id(&format!("p{w}-{b}-{i}")), &m, "7.00", t0);
                            let o = with_budget(
                                outcome(&p, &[("base", 1), ("promo", 7)]),
                                &budget,
                                1,
                                limit,
                            );
                            (p, o)
                        })
                        .collect();
                    for r in store.append_batch(&items).await.expect("batch") {
                        granted += promo_points(&r.expect("item"));
                    }
                }
            }
            granted
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.expect("task");
    }
    // 6 workers × 40 purchases × 7 points = 1680 proposed for 1000 of room.
    let used = stores[0].budget_used(&budget).await.expect("used");
    assert_eq!(used, Points(limit), "the budget is used up, exactly");
    assert_eq!(granted, limit, "sum of granted == used");
    // Every member's balance is its postings, and base points were never trimmed.
    let mut total = 0;
    for w in 0..6 {
        for k in 0..5 {
            let m = s.member(&format!("m{w}-{k}"));
            total += stores[0]
                .balance(&m)
                .await
                .expect("balance")
                .balances
                .available
                .get();
            rewards_core::conformance::assert_conserved(&*stores[0], &m).await;
        }
    }
    assert_eq!(total, 240 + limit);
    assert!(stores[0].reconcile().await.expect("reconcile").is_clean());
    drop(stores);
}

fn promo_points(r: &rewards_core::ledger::Receipt) -> i64 {
    r.awards
        .iter()
        .filter(|(rule, _)| &**rule == "promo")
        .map(|(_, p)| p.get())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_apply_once() {
    let schema = TestSchema::new();
    let stores = stores(&schema, 8).await;
    let s = Scope::new("dup");
    let m = s.member("m");
    let t0 = year(2090);
    let p = purchase(&s.id("p"), &m, "10.00", t0);
    let o = outcome(&p, &[("base", 10)]);
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let store = store.clone();
        let (p, o) = (p.clone(), o.clone());
        tasks.push(tokio::spawn(async move {
            if w % 2 == 0 {
                store.append(&p, &o).await.expect("append")
            } else {
                let mut r = store
                    .append_batch(&[(p.clone(), o.clone())])
                    .await
                    .expect("batch");
                r.pop().expect("one").expect("item")
            }
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        let receipt = task.await.expect("task");
        assert_eq!(receipt.balances.available, Points(10));
        if !receipt.duplicate {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one append applied");
    let b = stores[0].balance(&m).await.expect("balance");
    assert_eq!((b.balances.available, b.version), (Points(10), 1));
    drop(stores);
}

/// The same id for two different members at once: the members' row locks
/// do not serialise them, the inbox's unique key does. One applies, the
/// other is a conflict (never both, never a half-write).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_id_for_two_members_at_once_is_one_apply_and_conflicts() {
    let schema = TestSchema::new();
    let stores = stores(&schema, 8).await;
    let s = Scope::new("race");
    let t0 = year(2090);
    for round in 0..5 {
        let id = s.id(&format!("x{round}"));
        let mut tasks = Vec::new();
        for (w, store) in stores.iter().enumerate() {
            let store = store.clone();
            let m = s.member(&format!("m{w}"));
            let p = purchase(&id, &m, "3.00", t0);
            let o = outcome(&p, &[("base", 3)]);
            tasks.push(tokio::spawn(async move { store.append(&p, &o).await }));
        }
        let (mut applied, mut conflicts) = (0, 0);
        for task in tasks {
            match task.await.expect("task") {
                Ok(r) if !r.duplicate => applied += 1,
                Err(e) if e.kind() == ErrorKind::Conflict => conflicts += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((applied, conflicts), (1, 7), "round {round}");
    }
    let mut total = 0;
    for w in 0..8 {
        if let Ok(b) = stores[0].balance(&s.member(&format!("m{w}"))).await {
            total += b.balances.available.get();
        }
    }
    assert_eq!(total, 15, "five ids, three points each, once");
    assert!(stores[0].reconcile().await.expect("reconcile").is_clean());
    drop(stores);
}

/// Unit-level: a store's own errors for bad requests name the request and
/// leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_writes_nothing() {
    let t = PgTest::new().await;
    let s = Scope::new("refused");
    let m = s.member("m");
    let t0 = year(2090);
    let r = referring(
        rewards_core::TxKind::Refund,
        &s.id("r"),
        &m,
        "1.00",
        t0,
        &s.id("nope"),
    );
    let err = t.store.append(&r, &outcome(&r, &[])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidReference, "{err}");
    // The member row created inside the unit was rolled back with it.
    assert_eq!(
        t.store.balance(&m).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let client = t.schema.client().await;
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {}.members", t.schema.schema()),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}
