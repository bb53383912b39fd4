//! The conformance suite against the in-memory store (with and without an
//! event log), and against the in-memory cache.

use std::sync::Arc;

use rewards_core::conformance::{self, fixtures::*};
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::{FsyncPolicy, MemoryCache, MemoryStore};
use rewards_core::store::LedgerStore;

fn store() -> MemoryStore {
    MemoryStore::new(LedgerConfig::default())
}

#[tokio::test]
async fn earn() {
    conformance::check_earn(&store()).await;
}

#[tokio::test]
async fn idempotency() {
    conformance::check_idempotency(&store()).await;
}

#[tokio::test]
async fn redemption() {
    conformance::check_redemption(&store()).await;
}

#[tokio::test]
async fn partial_refunds() {
    conformance::check_partial_refunds(&store()).await;
}

#[tokio::test]
async fn refund_after_redemption() {
    conformance::check_refund_after_redemption(&store()).await;
}

#[tokio::test]
async fn invalid_references() {
    conformance::check_invalid_references(&store()).await;
}

#[tokio::test]
async fn card_lifecycle() {
    conformance::check_card_lifecycle(&store()).await;
}

#[tokio::test]
async fn caps_and_budgets() {
    conformance::check_caps_and_budgets(&store()).await;
}

#[tokio::test]
async fn adjustments() {
    conformance::check_adjustments(&store()).await;
}

#[tokio::test]
async fn tier_from_outcome() {
    conformance::check_tier_from_outcome(&store()).await;
}

#[tokio::test]
async fn clawback_from_other_lots() {
    conformance::check_clawback_from_other_lots(&store()).await;
}

#[tokio::test]
async fn predicted_views() {
    conformance::check_predicted_views(&store()).await;
}

#[tokio::test]
async fn chained_settlements() {
    conformance::check_chained_settlements(&store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency() {
    conformance::check_concurrency(Arc::new(store())).await;
}

#[tokio::test]
async fn expiry() {
    conformance::sweep_check_expiry(&store()).await;
}

#[tokio::test]
async fn pending() {
    conformance::sweep_check_pending(&store()).await;
}

#[tokio::test]
async fn authorization_lapse() {
    let config = LedgerConfig {
        authorization_ttl_secs: 7 * 24 * 3600,
    };
    let ttl = config.authorization_ttl();
    conformance::sweep_check_authorization_lapse(&MemoryStore::new(config), ttl).await;
}

#[tokio::test]
async fn tier_grace() {
    conformance::sweep_check_tier_grace(&store()).await;
}

#[tokio::test]
async fn balance_cache() {
    conformance::check_balance_cache(&MemoryCache::new()).await;
}

/// The whole suite on one store with an event log, then a rebuild from the
/// log reproduces every member's balances, history and audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_then_rebuild_from_the_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let config = LedgerConfig::default();
    let store = Arc::new(MemoryStore::open(&path, config.clone(), FsyncPolicy::Never).unwrap());
    conformance::run_all(store.clone(), config.authorization_ttl()).await;
    let members = store.members();
    assert!(members.len() > 20);
    let rebuilt = MemoryStore::open(&path, config, FsyncPolicy::Never).unwrap();
    for m in &members {
        let (a, b) = (store.balance(m).await, rebuilt.balance(m).await);
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{m}"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{m}: {a:?} vs {b:?}"),
        }
        if let Ok(history) = store.history(m, 0, 1000).await {
            assert_eq!(history, rebuilt.history(m, 0, 1000).await.unwrap());
            assert_eq!(
                store.audit(m, 0, 1000).await.unwrap(),
                rebuilt.audit(m, 0, 1000).await.unwrap()
            );
            conformance::assert_conserved(&rebuilt, m).await;
        }
    }
    assert!(rebuilt.reconcile().await.unwrap().is_clean());
    // The rebuilt store keeps its inbox: a duplicate is still a duplicate.
    let s = Scope::new("after");
    let m = s.member("m");
    let p = purchase(&s.id("p"), &m, "3.00", year(2090));
    rebuilt
        .append(&p, &outcome(&p, &[("base", 3)]))
        .await
        .unwrap();
    drop(rebuilt);
    let again = MemoryStore::open(&path, LedgerConfig::default(), FsyncPolicy::Always).unwrap();
    assert!(
        again
            .append(&p, &outcome(&p, &[("base", 3)]))
            .await
            .unwrap()
            .duplicate
    );
}

#[tokio::test]
async fn batches() {
    conformance::check_batches(&store()).await;
}

#[tokio::test]
async fn member_views() {
    conformance::check_member_views(&store()).await;
}

#[tokio::test]
async fn member_walk() {
    conformance::check_member_walk(&store()).await;
}

#[tokio::test]
async fn outbox() {
    conformance::check_outbox(&store()).await;
}

/// The outbox survives a restart from the event log: unacknowledged events
/// come back with their positions, acknowledged ones do not.
#[tokio::test]
async fn the_outbox_is_rebuilt_from_the_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let store = MemoryStore::open(&path, LedgerConfig::default(), FsyncPolicy::Never).unwrap();
    let s = Scope::new("outbox-log");
    let m = s.member("m");
    for i in 0..4 {
        let p = purchase(&s.id(&format!("p{i}")), &m, "2.00", year(2090));
        store
            .append(&p, &outcome(&p, &[("base", 2)]))
            .await
            .unwrap();
    }
    let events = store.outbox_fetch(10).await.unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(store.outbox_ack(&[events[1].seq]).await.unwrap(), 1);
    drop(store);
    let rebuilt = MemoryStore::open(&path, LedgerConfig::default(), FsyncPolicy::Never).unwrap();
    let left = rebuilt.outbox_fetch(10).await.unwrap();
    assert_eq!(
        left,
        vec![events[0].clone(), events[2].clone(), events[3].clone()]
    );
    // New events continue after the old positions.
    let p = purchase(&s.id("p9"), &m, "2.00", year(2090));
    rebuilt
        .append(&p, &outcome(&p, &[("base", 2)]))
        .await
        .unwrap();
    let all = rebuilt.outbox_fetch(10).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all[3].seq > events[3].seq);
}
