//! The core's store conformance suite against the PostgreSQL store, one
//! check per test, each on its own schema (so the sweep checks may run in
//! parallel too).

mod postgres_support;

use postgres_support::PgTest;
use rewards_core::conformance;
use rewards_core::ledger::LedgerConfig;
use rewards_core::store::LedgerStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earn() {
    let t = PgTest::new().await;
    conformance::check_earn(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency() {
    let t = PgTest::new().await;
    conformance::check_idempotency(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redemption() {
    let t = PgTest::new().await;
    conformance::check_redemption(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_refunds() {
    let t = PgTest::new().await;
    conformance::check_partial_refunds(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_after_redemption() {
    let t = PgTest::new().await;
    conformance::check_refund_after_redemption(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_references() {
    let t = PgTest::new().await;
    conformance::check_invalid_references(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_lifecycle() {
    let t = PgTest::new().await;
    conformance::check_card_lifecycle(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_and_budgets() {
    let t = PgTest::new().await;
    conformance::check_caps_and_budgets(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments() {
    let t = PgTest::new().await;
    conformance::check_adjustments(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_from_outcome() {
    let t = PgTest::new().await;
    conformance::check_tier_from_outcome(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clawback_from_other_lots() {
    let t = PgTest::new().await;
    conformance::check_clawback_from_other_lots(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicted_views() {
    let t = PgTest::new().await;
    conformance::check_predicted_views(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_settlements() {
    let t = PgTest::new().await;
    conformance::check_chained_settlements(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency() {
    let t = PgTest::new().await;
    conformance::check_concurrency(t.store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry() {
    let t = PgTest::new().await;
    conformance::sweep_check_expiry(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending() {
    let t = PgTest::new().await;
    conformance::sweep_check_pending(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_lapse() {
    let config = LedgerConfig {
        authorization_ttl_secs: 7 * 24 * 3600,
    };
    let ttl = config.authorization_ttl();
    let t = PgTest::with_ledger(config).await;
    conformance::sweep_check_authorization_lapse(&*t.store, ttl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_walk() {
    let t = PgTest::new().await;
    conformance::check_member_walk(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_grace() {
    let t = PgTest::new().await;
    conformance::sweep_check_tier_grace(&*t.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile() {
    let t = PgTest::new().await;
    conformance::check_reconcile(&*t.store).await;
}

/// The whole suite in its safe order on one schema, then reconciliation
/// in SQL finds nothing drifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_then_reconcile() {
    let t = PgTest::new().await;
    conformance::run_all(t.store.clone(), LedgerConfig::default().authorization_ttl()).await;
    let report = t.store.reconcile().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.drift);
    assert!(report.members > 20, "{report:?}");
}
