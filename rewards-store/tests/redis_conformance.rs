//! The core's store conformance suite run against
//! `CachedStore<MemoryStore, RedisCache>`, on the shared Redis and on a
//! Redis Cluster: balances and recent entries read through the cache must
//! behave exactly as the store's own. After each check, every member's
//! cache entry (when there is one) must equal the store's state.

// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;

use std::sync::Arc;

use rewards_core::conformance;
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::store::{BalanceCache, CachedMember, LedgerStore};
use rewards_store::cached::{CacheBackend, CachedStore, CachedStoreConfig};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

use redis_support::*;

type Cached = CachedStore<MemoryStore, RedisCache>;

fn cached(store: MemoryStore, config: RedisCacheConfig) -> Cached {
    let config_store = CachedStoreConfig {
        // The machines are shared and busy: generous bounds, so that a
        // slow round trip does not count as a failure here.
        write_through_timeout: std::time::Duration::from_secs(2),
        read_timeout: std::time::Duration::from_secs(2),
        ..CachedStoreConfig::default()
    };
    CachedStore::new(
        store,
        RedisCache::new(config).expect("cache config"),
        config_store,
    )
}

/// Every member's cache entry, if any, equals the store's balances, tier,
/// version and latest recent entries; reading through the wrapper gives
/// the store's answers; and nothing failed on the way.
async fn assert_cache_matches_store(cached: &Cached) {
    let store = cached.store();
    let cache = cached.cache();
    let members = store.members();
    assert!(!members.is_empty());
    let mut entries = 0;
    for m in &members {
        let expected_balance = match store.balance(m).await {
            Ok(b) => b,
            Err(e) => {
                // Unknown to the store (e.g. only refused requests): the
                // wrapper says the same and caches nothing.
                let through = cached.balance(m).await.expect_err("unknown member");
                assert_eq!(through.kind(), e.kind(), "{m}");
                assert_eq!(BalanceCache::get(cache, m).await.expect("get"), None, "{m}");
                continue;
            }
        };
        let expected_recent = store
            .recent(m, cache.recent_capacity())
            .await
            .expect("store recent");
        if let Some(entry) = BalanceCache::get(cache, m).await.expect("cache get") {
            entries += 1;
            assert_eq!(
                entry,
                CachedMember {
                    member: m.clone(),
                    version: expected_balance.version,
                    balances: expected_balance.balances,
                    tier: expected_balance.tier.clone(),
                    recent: expected_recent.clone(),
                },
                "{m}: cache entry != store"
            );
        }
        assert_eq!(
            cached.balance(m).await.expect("balance"),
            expected_balance,
            "{m}"
        );
        assert_eq!(
            cached.recent(m, 5).await.expect("recent"),
            store.recent(m, 5).await.expect("store recent"),
            "{m}"
        );
        // The read above filled any miss: the entry is there now.
        assert!(
            BalanceCache::get(cache, m).await.expect("get").is_some(),
            "{m}"
        );
    }
    let health = cached.health();
    assert_eq!(health.errors, 0, "{health:?}");
    assert_eq!(health.breaker_counters.dirty, 0, "{health:?}");
    assert!(health.hits > 0, "{health:?}");
    let _ = entries;
    cache.clear().await.expect("clear");
}

macro_rules! conformance_on_both {
    ($($name:ident => $check:expr;)*) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn single() {
                    let store = cached(
                        MemoryStore::new(LedgerConfig::default()),
                        single_config(stringify!($name)),
                    );
                    let check = $check;
                    check(store.clone()).await;
                    assert_cache_matches_store(&store).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cluster() {
                    let cluster = TestCluster::get();
                    let store = cached(
                        MemoryStore::new(LedgerConfig::default()),
                        cluster_config(&cluster, stringify!($name)),
                    );
                    let check = $check;
                    check(store.clone()).await;
                    assert_cache_matches_store(&store).await;
                }
            }
        )*
    };
}

conformance_on_both! {
    earn => |s: Cached| async move { conformance::check_earn(&s).await };
    idempotency => |s: Cached| async move { conformance::check_idempotency(&s).await };
    redemption => |s: Cached| async move { conformance::check_redemption(&s).await };
    partial_refunds => |s: Cached| async move { conformance::check_partial_refunds(&s).await };
    refund_after_redemption => |s: Cached| async move { conformance::check_refund_after_redemption(&s).await };
    invalid_references => |s: Cached| async move { conformance::check_invalid_references(&s).await };
    card_lifecycle => |s: Cached| async move { conformance::check_card_lifecycle(&s).await };
    caps_and_budgets => |s: Cached| async move { conformance::check_caps_and_budgets(&s).await };
    adjustments => |s: Cached| async move { conformance::check_adjustments(&s).await };
    tier_from_outcome => |s: Cached| async move { conformance::check_tier_from_outcome(&s).await };
    predicted_views => |s: Cached| async move { conformance::check_predicted_views(&s).await };
    chained_settlements => |s: Cached| async move { conformance::check_chained_settlements(&s).await };
    clawback_from_other_lots => |s: Cached| async move { conformance::check_clawback_from_other_lots(&s).await };
    concurrency => |s: Cached| async move { conformance::check_concurrency(Arc::new(s)).await };
    expiry => |s: Cached| async move { conformance::sweep_check_expiry(&s).await };
    pending => |s: Cached| async move { conformance::sweep_check_pending(&s).await };
    tier_grace => |s: Cached| async move { conformance::sweep_check_tier_grace(&s).await };
    member_walk => |s: Cached| async move { conformance::check_member_walk(&s).await };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_lapse_single() {
    let config = LedgerConfig {
        authorization_ttl_secs: 7 * 24 * 3600,
    };
    let ttl = config.authorization_ttl();
    let store = cached(MemoryStore::new(config), single_config("lapse"));
    conformance::sweep_check_authorization_lapse(&store, ttl).await;
    assert_cache_matches_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_lapse_cluster() {
    let cluster = TestCluster::get();
    let config = LedgerConfig {
        authorization_ttl_secs: 7 * 24 * 3600,
    };
    let ttl = config.authorization_ttl();
    let store = cached(MemoryStore::new(config), cluster_config(&cluster, "lapse"));
    conformance::sweep_check_authorization_lapse(&store, ttl).await;
    assert_cache_matches_store(&store).await;
}

/// The whole suite on one wrapped store, then the cache equals the store
/// for every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_single() {
    let config = LedgerConfig::default();
    let ttl = config.authorization_ttl();
    let store = cached(MemoryStore::new(config), single_config("all"));
    conformance::run_all(Arc::new(store.clone()), ttl).await;
    assert_cache_matches_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_cluster() {
    let cluster = TestCluster::get();
    let config = LedgerConfig::default();
    let ttl = config.authorization_ttl();
    let store = cached(MemoryStore::new(config), cluster_config(&cluster, "all"));
    conformance::run_all(Arc::new(store.clone()), ttl).await;
    assert_cache_matches_store(&store).await;
}

/// The core's `BalanceCache` check on the cache behind a wrapper (the same
/// adapter both ways).
#[tokio::test]
async fn balance_cache_check_on_the_wrapped_cache() {
    let store = cached(
        MemoryStore::new(LedgerConfig::default()),
        single_config("bc"),
    );
    conformance::check_balance_cache(store.cache()).await;
}
